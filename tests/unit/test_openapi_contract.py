"""Both OpenAPI documents state the whole contract: one problem model, headers, links."""

from __future__ import annotations

from typing import Any

import pytest

from command_api.app import create_app as command_app
from query_api.app import create_app as query_app
from runtime.settings import Settings

DOCUMENTS = {"command": command_app, "query": query_app}


@pytest.fixture(params=sorted(DOCUMENTS))
def document(request: pytest.FixtureRequest) -> dict[str, Any]:
    app = DOCUMENTS[request.param](Settings())
    spec: dict[str, Any] = app.openapi()
    return spec


def _responses(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (operation["operationId"], status, response)
        for path_item in document["paths"].values()
        for operation in path_item.values()
        for status, response in operation["responses"].items()
    ]


def test_every_error_response_references_the_one_problem_schema(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["Problem"]["title"] == "Problem"
    for operation, _status, response in _responses(document):
        for media_type, media in response.get("content", {}).items():
            if media_type == "application/problem+json":
                assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, operation


def test_every_response_declares_its_headers(document: dict[str, Any]) -> None:
    for operation, status, response in _responses(document):
        headers = response["headers"]
        assert "X-Correlation-ID" in headers, (operation, status)
        if status in ("409", "429", "503"):
            assert "Retry-After" in headers, (operation, status)


def test_the_document_names_its_server_security_tags_and_describes_each_api_operation(
    document: dict[str, Any],
) -> None:
    assert document["servers"] == [{"url": "/", "description": f"This {document['info']['title']}"}]
    assert document["security"] == [{"bearerAuth": []}]
    assert {tag["name"] for tag in document["tags"]} == {"applications", "operations"}
    for path_item in document["paths"].values():
        for operation in path_item.values():
            if operation["tags"] == ["applications"]:
                assert "PENDING" in operation["description"]
                assert operation["security"] != []
            else:
                assert operation["security"] == []  # the probes need no token


def test_the_submit_answer_declares_location_and_links_to_the_status_operation() -> None:
    settings = Settings()
    accepted = command_app(settings).openapi()["paths"]["/applications"]["post"]["responses"]
    headers = accepted["202"]["headers"]
    link = accepted["202"]["links"]["GetApplicationStatus"]

    assert {"Location", "Idempotent-Replayed"} <= set(headers)
    assert link["operationRef"].startswith(f"{settings.query_api_base_url}/openapi.json#/paths/")
    assert link["parameters"] == {"application_id": "$response.body#/application_id"}
