"""Both APIs against their own OpenAPI documents, with generated requests (Schemathesis).

Every operation of each document gets generated requests, valid and invalid ones; each
answer must not be a 5xx, must use a documented status code and content type, and must
match the documented schema. Runs in-process (ASGI) on the migrated test database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import Receive, Scope, Send

from command_api.app import create_app as create_command_app
from query_api.app import create_app as create_query_app
from runtime.settings import Settings
from tests.conftest import TEST_DATABASE
from tests.support.auth import bearer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Bounded: a few dozen requests per operation keep the module well under a minute.
BOUNDED = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class _SuiteApp:
    """An ASGI app that serves the real API on the suite's own database once it exists.

    Schemathesis reads the document at import, before any fixture has started the
    suite's servers (on ports of their own): the document is the same whatever the
    settings, so the import-time app serves it; ``_on_the_suite_database`` then swaps in
    an app built from ``base_settings`` before the first generated request.
    """

    def __init__(self, factory: Callable[[Settings], FastAPI]) -> None:
        self.factory = factory
        self.app: FastAPI = factory(Settings(pg_database=TEST_DATABASE))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


_TOKEN: dict[str, str] = {}
_COMMAND = _SuiteApp(create_command_app)
_QUERY = _SuiteApp(create_query_app)
command_api = schemathesis.openapi.from_asgi("/openapi.json", _COMMAND)
query_api = schemathesis.openapi.from_asgi("/openapi.json", _QUERY)


@pytest.fixture(scope="module", autouse=True)
def _on_the_suite_database(base_settings: Settings) -> Iterator[None]:
    for app in (_COMMAND, _QUERY):
        app.app = app.factory(base_settings)
    # A valid token on every generated request: the fuzzing is of what a client may send.
    _TOKEN.update(bearer(base_settings))
    yield
    # Schemathesis keeps each app's lifespan running: end them, disposing the engines.
    shutdown_lifespans()


@command_api.parametrize()
@BOUNDED
def test_the_command_api_keeps_its_openapi_contract(case: Any) -> None:
    case.call_and_validate(checks=CHECKS, headers=_TOKEN)


@query_api.parametrize()
@BOUNDED
def test_the_query_api_keeps_its_openapi_contract(case: Any) -> None:
    case.call_and_validate(checks=CHECKS, headers=_TOKEN)


SUBMIT = command_api.find_operation_by_id("submitApplication")
STATUS = query_api.find_operation_by_id("getApplicationStatus")


@BOUNDED
@given(case=SUBMIT.as_strategy())
def test_every_accepted_submit_links_to_a_status_the_query_api_answers_as_documented(
    case: Any,
) -> None:
    # The 202's Location is the link from the submit to the status operation (stateful:
    # the second request is built from the first answer), across the two documents.
    submitted = case.call(headers=_TOKEN)
    SUBMIT.validate_response(submitted)
    if submitted.status_code != 202:
        return
    location = httpx.URL(submitted.headers["location"][0])
    application_id = location.path.split("/")[2]
    assert location.path == f"/applications/{application_id}/status"
    status = STATUS.Case(path_parameters={"application_id": application_id}).call(headers=_TOKEN)

    STATUS.validate_response(status)
    assert status.status_code == 200
    assert status.json()["status"] == "PENDING"
