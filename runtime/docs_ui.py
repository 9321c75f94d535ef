"""API documentation pages that work offline: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

FastAPI's own pages load their JavaScript, CSS, favicon and fonts from CDNs. These load
only files vendored into the package (``runtime/static``, mounted at ``/_static``), so the
documentation renders on a machine without internet access. Create the app with
``docs_url=None, redoc_url=None`` and call :func:`install_docs` once its routes are in:
it also gives every problem+json error response of the OpenAPI document an example.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from runtime.errors import FieldError
from runtime.problems import problem_body

#: The vendored Swagger UI and ReDoc files (see ``runtime/static/README.md``).
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/_static"
DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"

#: Swagger UI options on top of FastAPI's defaults. Operation ids are shown (clients
#: generate code from them); ``validatorUrl: null`` keeps Swagger UI from sending the
#: document to validator.swagger.io.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "displayOperationId": True,
    "validatorUrl": None,
}

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: The ids and correlation id the examples show.
EXAMPLE_ID = "3f2b8c1e-5d4a-4e8b-9c7d-1a2b3c4d5e6f"
EXAMPLE_CORRELATION_ID = "0d9e4c7a-8b1f-4f2e-a5c3-9e7d6b5a4c31"
#: Titles and slugs of the problems the APIs send (``runtime.errors`` and the HTTP
#: exception handler of ``runtime.problems``); any other status gets its HTTP phrase.
_PROBLEM_KINDS = {
    404: ("Not found", "not-found"),
    409: ("Conflict", "conflict"),
    413: ("Payload too large", "payload-too-large"),
    415: ("Unsupported media type", "unsupported-media-type"),
    422: ("Validation failed", "validation-error"),
    500: ("Internal server error", "internal-error"),
    503: ("Service unavailable", "dependency-unavailable"),
}
_PATH_PARAMETER = re.compile(r"\{([^}]+)\}")


def install_docs(app: FastAPI, title: str) -> None:
    """Serve ``GET /docs`` and ``GET /redoc`` for ``app`` from the packaged assets only.

    ``title`` is the pages' ``<title>``; the routes stay out of the OpenAPI document.
    The document gains an example for every problem+json error response (see
    :func:`add_problem_examples`), so that every response the pages show has one.
    """
    if app.openapi_url is None:
        raise ValueError("install_docs needs the app's OpenAPI document (openapi_url)")
    openapi_url = app.openapi_url
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="docs-static")

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI caches the document and regenerates it when routes change; filling in
        # only what is missing makes this cheap and idempotent on a cached document.
        return add_problem_examples(generate())

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_PATH}/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_PATH}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_PATH}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )


def _root_path(request: Request) -> str:
    """The prefix a reverse proxy serves the app under (``--root-path``), if any."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def add_problem_examples(document: dict[str, Any]) -> dict[str, Any]:
    """Give every problem+json response of ``document`` an example of its own status.

    Built with :func:`runtime.problems.problem_body`, so an example has exactly the shape
    the error handlers send; the response's description is its ``detail``, and a 422
    names an input of its operation. Responses that have an example keep it.
    """
    schemas = document.get("components", {}).get("schemas", {})
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                media = response.get("content", {}).get(PROBLEM_MEDIA_TYPE)
                if media is None or "example" in media or "examples" in media or not code.isdigit():
                    continue
                example = _problem_example(int(code), response, path, operation, schemas)
                # FastAPI may share one content dict between responses: replace, never mutate.
                response["content"] = {
                    **response["content"],
                    PROBLEM_MEDIA_TYPE: {**media, "example": example},
                }
    return document


def _problem_example(
    status: int,
    response: dict[str, Any],
    path: str,
    operation: dict[str, Any],
    schemas: dict[str, Any],
) -> dict[str, Any]:
    title, slug = _PROBLEM_KINDS.get(status) or _title_and_slug(status)
    detail = str(response.get("description") or title)
    instance = _PATH_PARAMETER.sub(EXAMPLE_ID, path)
    errors: list[FieldError] = []
    if status == 422:
        error = _invalid_input(operation, schemas)
        if error is not None:
            errors.append(error)
            detail = f"Invalid fields: {error.field}"
            if error.location == "path":
                bad = path.replace("{" + error.field + "}", "not-a-uuid")
                instance = _PATH_PARAMETER.sub(EXAMPLE_ID, bad)
    return problem_body(
        status=status,
        title=title,
        detail=detail,
        slug=slug,
        instance=instance,
        correlation_id=EXAMPLE_CORRELATION_ID,
        errors=errors,
    )


def _title_and_slug(status: int) -> tuple[str, str]:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "HTTP error"
    return title, title.lower().replace(" ", "-")


def _invalid_input(operation: dict[str, Any], schemas: dict[str, Any]) -> FieldError | None:
    """The error of a request missing a required body field, or with a bad path id.

    Path parameters are ids, and ids are UUIDs in both APIs.
    """
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    reference = str(body.get("schema", {}).get("$ref", ""))
    required = schemas.get(reference.rpartition("/")[2], {}).get("required", [])
    if required:
        name = str(required[0])
        return FieldError(name, f"{name} is required", "body", "missing")
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path":
            return FieldError(
                str(parameter["name"]),
                "Input should be a valid UUID, invalid character: found `n` at 0",
                "path",
                "uuid_parsing",
            )
    return None
