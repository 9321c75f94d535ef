"""Both APIs against their own OpenAPI documents, with generated requests (Schemathesis).

Every operation of each document gets generated requests, valid and invalid ones; each
answer must not be a 5xx, must use a documented status code and content type, and must
match the documented schema. Runs in-process (ASGI) on the migrated test database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from command_api.app import create_app as create_command_app
from query_api.app import create_app as create_query_app
from runtime.settings import Settings
from tests.conftest import TEST_DATABASE

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


# Built at import: Schemathesis generates one test per operation from the document, and
# its fixture-based loader does not work with this pytest. Building an app connects to
# nothing; the tests request ``base_settings``, which creates and migrates the database
# these apps use before the first request reaches them.
_SETTINGS = Settings(pg_database=TEST_DATABASE)
command_api = schemathesis.openapi.from_asgi("/openapi.json", create_command_app(_SETTINGS))
query_api = schemathesis.openapi.from_asgi("/openapi.json", create_query_app(_SETTINGS))


@pytest.fixture(scope="module", autouse=True)
def _apps_stopped_after_module() -> Iterator[None]:
    yield
    # Schemathesis keeps each app's lifespan running: end them, disposing the engines.
    shutdown_lifespans()


@command_api.parametrize()
@BOUNDED
def test_the_command_api_keeps_its_openapi_contract(case: Any, base_settings: Settings) -> None:
    assert base_settings.pg_database == _SETTINGS.pg_database
    case.call_and_validate(checks=CHECKS)


@query_api.parametrize()
@BOUNDED
def test_the_query_api_keeps_its_openapi_contract(case: Any, base_settings: Settings) -> None:
    assert base_settings.pg_database == _SETTINGS.pg_database
    case.call_and_validate(checks=CHECKS)
