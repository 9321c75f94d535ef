"""The OpenAPI documents of both APIs show an example for every request and response.

Swagger UI and ReDoc show these examples; an error example is checked against the body
the API really sends for that error. The pages themselves load only packaged files (the
browser test, tests/e2e/test_api_docs_browser.py, renders them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from command_api.app import create_app as create_command_api
from command_api.models import ApplicationAccepted, ApplicationRequest
from query_api.app import create_app as create_query_api
from query_api.models import ApplicationStatusResponse
from runtime.docs_ui import EXAMPLE_CORRELATION_ID, STATIC_DIR, STATIC_PATH
from runtime.problems import PROBLEM_SCHEMA
from runtime.settings import Settings
from tests.support.auth import bearer

# Building an app connects to nothing; none of these tests reaches the database.
APPS: dict[str, FastAPI] = {
    "command": create_command_api(Settings()),
    "query": create_query_api(Settings()),
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for api, app in APPS.items():
        for path, item in app.openapi()["paths"].items():
            for method, operation in item.items():
                if method in METHODS:
                    yield api, path, operation


def _responses() -> Iterator[tuple[str, str, str, str, dict[str, Any]]]:
    for api, path, operation in _operations():
        for code, response in operation["responses"].items():
            for media_type, media in response.get("content", {}).items():
                yield api, path, code, media_type, media


def _resolve(api: str, schema: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    name = reference.removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = APPS[api].openapi()["components"]["schemas"][name]
    return resolved


def _has_example(api: str, media: dict[str, Any]) -> bool:
    """An example on the media type, or on the schema it shows (what both UIs render)."""
    schema = _resolve(api, media.get("schema", {}))
    return any("example" in where or bool(where.get("examples")) for where in (media, schema))


OPERATIONS = list(_operations())
RESPONSES = list(_responses())
PROBLEMS = [r for r in RESPONSES if r[3] == "application/problem+json"]


def test_both_apis_document_their_operations_and_errors() -> None:
    ids = {operation["operationId"] for _, _, operation in OPERATIONS}
    assert {"submitApplication", "getApplicationStatus"} <= ids
    assert len(PROBLEMS) >= 6


@pytest.mark.parametrize(
    ("api", "path", "operation"),
    [o for o in OPERATIONS if "requestBody" in o[2]],
    ids=lambda value: value["operationId"] if isinstance(value, dict) else str(value),
)
def test_every_request_body_has_an_example(api: str, path: str, operation: dict[str, Any]) -> None:
    content = operation["requestBody"]["content"]

    assert content
    for media_type, media in content.items():
        assert _has_example(api, media), f"{api} {path} request body {media_type}"


@pytest.mark.parametrize(
    ("api", "path", "code", "media_type", "media"),
    RESPONSES,
    ids=[f"{api}-{path}-{code}-{media_type}" for api, path, code, media_type, _ in RESPONSES],
)
def test_every_response_content_has_an_example(
    api: str, path: str, code: str, media_type: str, media: dict[str, Any]
) -> None:
    assert _has_example(api, media), f"{api} {path} {code} {media_type}"


@pytest.mark.parametrize(
    ("api", "path", "code", "media_type", "media"),
    PROBLEMS,
    ids=[f"{api}-{path}-{code}" for api, path, code, _, _ in PROBLEMS],
)
def test_each_error_example_is_a_problem_of_its_own_status(
    api: str, path: str, code: str, media_type: str, media: dict[str, Any]
) -> None:
    example = media["example"]
    assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
    schema = PROBLEM_SCHEMA

    assert example["status"] == int(code)
    assert example["type"].startswith("urn:prequal:problem:")
    assert set(schema["required"]) <= set(example)
    assert set(example) <= set(schema["properties"])


def _example(api: str, path: str, code: str) -> dict[str, Any]:
    for other_api, other_path, other_code, _media_type, media in PROBLEMS:
        if (other_api, other_path, other_code) == (api, path, code):
            example: dict[str, Any] = media["example"]
            return example
    raise AssertionError(f"no {code} problem example for {api} {path}")


async def _send(api: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=APPS[api])
    async with httpx.AsyncClient(transport=transport, base_url="http://docs") as client:
        # The examples show what an authenticated client gets (the default Settings name
        # the checkout's development issuer, made on first use).
        headers = {"X-Correlation-ID": EXAMPLE_CORRELATION_ID, **bearer(Settings())}
        return await client.request(method, url, headers=headers, **kwargs)


async def test_the_validation_example_of_a_submission_is_the_body_the_api_sends() -> None:
    example = APPS["command"].openapi()["components"]["schemas"]["ApplicationRequest"]["examples"]
    body = {name: value for name, value in example[0].items() if name != "pan_number"}

    response = await _send("command", "POST", "/applications", json=body)

    assert response.status_code == 422
    assert response.json() == _example("command", "/applications", "422")


async def test_the_validation_example_of_a_status_read_is_the_body_the_api_sends() -> None:
    response = await _send("query", "GET", "/applications/not-a-uuid/status")

    assert response.status_code == 422
    assert response.json() == _example("query", "/applications/{application_id}/status", "422")


@pytest.mark.parametrize(
    ("api", "model"),
    [
        ("command", ApplicationRequest),
        ("command", ApplicationAccepted),
        ("query", ApplicationStatusResponse),
    ],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_the_model_examples_are_valid_bodies(api: str, model: type[BaseModel]) -> None:
    examples = APPS[api].openapi()["components"]["schemas"][model.__name__]["examples"]

    assert examples
    for example in examples:
        model.model_validate(example)


@pytest.mark.parametrize("api", sorted(APPS))
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_only_packaged_files_each_served_whole(
    api: str, page: str
) -> None:
    html = await _send(api, "GET", page)
    assert html.status_code == 200
    urls = re.findall(r'(?:src|href|spec-url)="([^"]*)"', html.text)
    urls += re.findall(r"url: '([^']*)'", html.text)  # Swagger UI's document

    assert sorted(u for u in urls if not u.startswith(f"{STATIC_PATH}/")) == ["/openapi.json"]
    for url in urls:
        response = await _send(api, "GET", url)
        assert response.status_code == 200, url
        if url.startswith(f"{STATIC_PATH}/"):
            packaged = STATIC_DIR / url.removeprefix(f"{STATIC_PATH}/")
            assert response.content == packaged.read_bytes(), url
