"""Amend the OpenAPI document FastAPI generates: operation by operation, or whole."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

#: Changes one operation object of the document in place.
Amendment = Callable[[dict[str, Any]], None]


def amend_operations(app: FastAPI, amend: Amendment) -> None:
    """Apply ``amend`` to every operation of ``app``'s document when it is generated.

    Wraps ``app.openapi``, so amendments installed one after another all apply, in order;
    FastAPI's cached document is returned as it is.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict):
                    amend(operation)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def amend_document(app: FastAPI, amend: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``amend`` to ``app``'s whole document when it is generated (see above)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        amend(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


#: Headers every response of both APIs may carry, as OpenAPI header objects.
HEADERS: dict[str, dict[str, Any]] = {
    "X-Correlation-ID": {
        "description": "The request's correlation id (the client's, or a new one): it is in"
        " every log line about the request and in the events it causes.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again (RFC 9110 §10.2.3).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Location": {
        "description": "The application's status URL on the query API: poll it until its"
        " status is no longer PENDING.",
        "schema": {"type": "string", "format": "uri"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this answer replays an earlier request with the same"
        " Idempotency-Key: nothing new was stored.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
#: Statuses whose answer says when to retry.
RETRY_STATUSES = ("409", "429", "503")


@dataclass(frozen=True)
class Contract:
    """What an API's document states beyond what FastAPI generates (see ``publish``).

    ``description``: the API's, for ``info``. ``tags``: name → description.
    ``operations``: operationId → its tag, description (CommonMark), extra response
    headers (status → header names of :data:`HEADERS`) and OpenAPI links (status → name →
    link object). Operations absent from ``operations`` are tagged ``operations`` and
    need no token.
    """

    title: str
    description: str
    tags: dict[str, str]
    operations: dict[str, Operation] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """One operation's tag, description, extra response headers and links."""

    tag: str
    description: str
    headers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    links: dict[str, dict[str, Any]] = field(default_factory=dict)


def publish(app: FastAPI, contract: Contract, problem_schema: dict[str, Any]) -> None:
    """Make ``app``'s document one a client generator can use whole.

    The problem schema becomes one component (``#/components/schemas/Problem``) that every
    error response references, so generators keep one model for all of them; every
    response declares ``X-Correlation-ID``, a 409/429/503 ``Retry-After``; the document
    gets a relative server, an explicit top-level security statement (operations
    without a token say ``security: []``), tags, descriptions and links.
    """

    def amend(schema: dict[str, Any]) -> None:
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = problem_schema
        schemes = list(components.get("securitySchemes", {}))
        schema["info"].setdefault("description", contract.description)
        schema["info"].setdefault("license", {"name": "MIT", "identifier": "MIT"})
        schema["info"].setdefault("contact", {"name": "prequal maintainers"})
        schema["servers"] = [{"url": "/", "description": f"This {contract.title}"}]
        schema["security"] = [{scheme: []} for scheme in schemes]
        schema["tags"] = [{"name": n, "description": d} for n, d in contract.tags.items()]
        used: set[str] = set()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict):
                    used |= _amend_operation(operation, contract, problem_schema)
        components["headers"] = {name.replace("-", ""): HEADERS[name] for name in sorted(used)}

    amend_document(app, amend)


def _amend_operation(
    operation: dict[str, Any], contract: Contract, problem_schema: dict[str, Any]
) -> set[str]:
    """Amend one operation in place; the names of the headers its responses declare."""
    documented = contract.operations.get(operation.get("operationId", ""))
    used: set[str] = set()
    if documented is None:
        operation["tags"] = ["operations"]
        operation.setdefault("security", [])
        operation.setdefault("description", operation.get("summary", ""))
    else:
        operation["tags"] = [documented.tag]
        operation["description"] = documented.description
    for status, response in operation.get("responses", {}).items():
        for media in response.get("content", {}).values():
            if media.get("schema") == problem_schema:
                media["schema"] = {"$ref": "#/components/schemas/Problem"}
        names = ["X-Correlation-ID"]
        if status in RETRY_STATUSES:
            names.append("Retry-After")
        if documented is not None:
            names.extend(documented.headers.get(status, ()))
            if status in documented.links:
                response["links"] = documented.links[status]
        headers = response.setdefault("headers", {})
        for name in names:
            headers.setdefault(name, {"$ref": f"#/components/headers/{name.replace('-', '')}"})
        used.update(names)
    return used
