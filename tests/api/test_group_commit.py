"""Concurrent submits share statements; each application is still stored whole or not at all."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import timedelta
from typing import Any

import httpx
import psycopg
from prometheus_client import REGISTRY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.group_commit import GroupCommit, RowOutcome, numbered_parameters, numbered_rows
from command_api.models import ApplicationRequest
from command_api.submit import SubmitApplication, SubmitContext, submit_statement
from runtime.db import create_engine
from runtime.errors import Outcome, WriteFailed
from runtime.settings import Settings
from tests.api.conftest import valid_body


def _statements() -> tuple[float, float]:
    """(statements written, applications written) by group commits so far."""
    count = REGISTRY.get_sample_value("prequal_command_group_commit_size_count") or 0.0
    total = REGISTRY.get_sample_value("prequal_command_group_commit_size_sum") or 0.0
    return count, total


def _rows(settings: Settings, engine: AsyncEngine) -> dict[str, Any]:
    """The parameters of one new application, as the submit use case builds them."""
    use_case = SubmitApplication(engine, settings.topic_submitted, timedelta(days=1))
    request = ApplicationRequest.model_validate(valid_body())
    _, row = use_case.row(request, SubmitContext("corr-group"))
    return row


def _stored(db: psycopg.Connection, application_id: object) -> tuple[int, ...]:
    """How many application, projection and outbox rows the application has."""
    counts = []
    for query in (
        "SELECT count(*) FROM applications WHERE id = %s",
        "SELECT count(*) FROM application_status WHERE application_id = %s",
        "SELECT count(*) FROM outbox WHERE aggregateid = %s::text",
    ):
        row = db.execute(query, (str(application_id),)).fetchone()
        assert row is not None
        counts.append(int(row[0]))
    return tuple(counts)


async def test_concurrent_submissions_share_statements_and_each_is_stored_whole(
    client: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    statements_before, applications_before = _statements()

    responses = await asyncio.gather(
        *(client.post("/applications", json=valid_body()) for _ in range(60))
    )

    assert [r.status_code for r in responses] == [202] * 60
    for response in responses:
        assert _stored(db, response.json()["application_id"]) == (1, 1, 1)
    statements, applications = _statements()
    assert applications - applications_before == 60
    assert statements - statements_before < 60, "no two applications shared a statement"


async def test_one_refused_application_fails_alone_and_the_rest_of_its_group_is_stored(
    settings: Settings, engine: AsyncEngine, db: psycopg.Connection
) -> None:
    writer = GroupCommit(engine, submit_statement, max_in_flight=1)
    rows = [_rows(settings, engine) for _ in range(5)]
    # Same application id, a different event: the second one breaks the primary key.
    twin = {**rows[0], "event_id": uuid.uuid4()}

    outcomes = await asyncio.gather(
        *(writer.write(row) for row in [*rows, twin]), return_exceptions=True
    )

    assert outcomes[:5] == [RowOutcome(locked=True, accepted=True)] * 5
    assert isinstance(outcomes[5], IntegrityError)
    for row in rows:
        assert _stored(db, row["id"]) == (1, 1, 1)


async def test_a_database_failure_fails_the_whole_group_at_once(settings: Settings) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    nowhere = create_engine(settings.model_copy(update={"pg_port": port}), "tests-nowhere")
    attempts: list[int] = []

    class Counting(GroupCommit):
        async def _execute(self, group: list[Any]) -> list[RowOutcome | None]:
            attempts.append(len(group))
            return await super()._execute(group)

    writer = Counting(nowhere, submit_statement, max_in_flight=1)
    try:
        outcomes = await asyncio.gather(
            *(writer.write(_rows(settings, nowhere)) for _ in range(4)), return_exceptions=True
        )
    finally:
        await nowhere.dispose()

    assert all(isinstance(outcome, WriteFailed) for outcome in outcomes)
    assert {outcome.outcome for outcome in outcomes if isinstance(outcome, WriteFailed)} == {
        Outcome.NOT_STORED
    }, "a refused connection sent nothing: the requests may simply retry"
    assert attempts == [4], "a database failure must not be retried row by row"


def test_numbered_rows_and_parameters_line_up() -> None:
    rows = numbered_rows("(%(a)s, %(b)s, %(a)s)", 2)
    params = numbered_parameters([{"a": 1, "b": 2}, {"a": 3, "b": 4}])

    assert rows == "(%(a_0)s, %(b_0)s, %(a_0)s), (%(a_1)s, %(b_1)s, %(a_1)s)"
    assert params == {"a_0": 1, "b_0": 2, "a_1": 3, "b_1": 4}
