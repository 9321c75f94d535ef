"""The query API reads the projection only: 200 with the status, 404 unknown, 422 non-UUID."""

from __future__ import annotations

import uuid

import httpx
import psycopg

from tests.api.conftest import valid_body


async def test_a_get_right_after_the_202_already_answers_pending(
    client: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    accepted = await client.post("/applications", json=valid_body())

    response = await query.get(accepted.headers["location"].split("8001", 1)[1])

    assert response.status_code == 200
    body = response.json()
    assert body["application_id"] == accepted.json()["application_id"]
    assert body["status"] == "PENDING"
    assert body["cibil_score"] is None
    assert body["decided_at"] is None


async def test_a_decided_application_answers_its_decision_and_score(
    query: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    application_id = uuid.uuid4()
    db.execute(
        "INSERT INTO application_status (application_id, client_id, status, cibil_score,"
        " submitted_at, decided_at, version) VALUES (%s, 'tests', 'REJECTED', 610, now(),"
        " now(), 2)",
        (application_id,),
    )

    response = await query.get(f"/applications/{application_id}/status")

    assert response.status_code == 200
    assert response.json()["status"] == "REJECTED"
    assert response.json()["cibil_score"] == 610


async def test_an_unknown_id_is_a_404_problem(query: httpx.AsyncClient) -> None:
    unknown = uuid.uuid4()

    response = await query.get(f"/applications/{unknown}/status")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == f"No application {unknown}."
    assert response.json()["correlation_id"] == response.headers["x-correlation-id"]


async def test_an_id_that_is_not_a_uuid_is_a_422_naming_it(query: httpx.AsyncClient) -> None:
    response = await query.get("/applications/not-a-uuid/status")

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["field"], error["location"]) == ("application_id", "path")


async def test_the_query_api_health_checks_the_database(query: httpx.AsyncClient) -> None:
    response = await query.get("/health")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok"}


async def test_metrics_count_requests_by_route_template_not_by_id(
    query: httpx.AsyncClient,
) -> None:
    await query.get(f"/applications/{uuid.uuid4()}/status")

    metrics = (await query.get("/metrics")).text

    assert 'route="/applications/{application_id}/status"' in metrics
    assert 'service="query-api"' in metrics
