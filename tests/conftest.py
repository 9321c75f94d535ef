"""Session fixtures: real servers, a migrated test database, isolated topics per test.

Where the servers come from is chosen once per run (PREQUAL_TEST_INFRA=auto|local|
containers, tests/support/backends.py) and printed in pytest's header: servers of the
session's own, run by infra/local.sh in a slot of .infra/suite on free ports (never a
running system's, which may hold the default ports), started when they do not run yet
and stopped at the end if this session started them; or containers of
docker-compose.yml's images when a Docker engine answers. The processes a test starts
listen on free ports too (``spawn``), so the suite runs beside ``make run`` on the same
machine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.db import create_engine
from runtime.settings import Settings
from schema.migrate import upgrade
from tests.support.backends import (
    CONTAINERS,
    INFRA_VARIABLE,
    LOCAL,
    InfraSelectionError,
    Selection,
    SettingsOverrides,
    docker_answers,
    make_backend,
    report_header,
    select_backend,
)
from tests.support.infra import drop_slot, local, recreate_database, refuse_local_script
from tests.support.kafka import isolated_topics
from tests.support.processes import Process

# Overridable so that two suites can share one server without dropping each other's data.
TEST_DATABASE = os.environ.get("PREQUAL_TEST_DATABASE", "prequal_test")
TABLES = (
    "applications",
    "outbox",
    "outbox_replays",
    "inbox",
    "application_status",
    "idempotency_keys",
    "relay_handover",
)


INFRA = pytest.StashKey[Selection]()


def pytest_configure(config: pytest.Config) -> None:
    """Choose the servers' backend once for the run (a wrong PREQUAL_TEST_INFRA stops it)."""
    try:
        selection = select_backend(os.environ, docker_answers)
    except InfraSelectionError as error:
        raise pytest.UsageError(str(error)) from error
    config.stash[INFRA] = selection
    if selection.backend == CONTAINERS:
        refuse_local_script(
            f"this run's PostgreSQL and Kafka are containers ({INFRA_VARIABLE}="
            f"{selection.requested}); Kafka Connect and server outages are driven through"
            f" infra/local.sh on the local servers only: run this test with"
            f" {INFRA_VARIABLE}={LOCAL}"
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which servers this run uses, and why."""
    return report_header(config.stash[INFRA])


@pytest.fixture(scope="session")
def servers(request: pytest.FixtureRequest) -> Iterator[SettingsOverrides]:
    """PostgreSQL and Kafka, running for the whole session; the Settings fields reaching them."""
    backend = make_backend(request.config.stash[INFRA].backend)
    overrides = backend.start()
    try:
        yield overrides
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def base_settings(servers: SettingsOverrides, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at a freshly created, migrated test database."""
    admin = Settings(**servers)
    settings = Settings(
        **{
            **servers,
            "pg_database": TEST_DATABASE,
            "kafka_session_timeout_ms": 6000,
            "kafka_transaction_timeout_ms": 10000,
            "relay_poll_interval_s": 0.5,
            "relay_standby_retry_s": 0.5,
            "relay_delivery_timeout_ms": 5000,
            # The suite's own development issuer (tests/support/auth.py signs with it),
            # and a rate no test reaches unless it sets a lower one.
            "auth_dev_dir": str(tmp_path_factory.mktemp("auth")),
            "rate_limit_per_s": 100_000.0,
            "rate_limit_burst": 100_000,
            "debezium_slot": f"{TEST_DATABASE}_outbox",
            "debezium_publication": f"{TEST_DATABASE}_outbox_pub",
        }
    )
    with psycopg.connect(admin.psycopg_conninfo, autocommit=True) as conn:
        leftover_slot = conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
            (settings.debezium_slot,),
        ).fetchone()
    if leftover_slot:
        # A slot left on the test database by an interrupted run blocks DROP DATABASE;
        # only then is Connect (which would hold it) stopped.
        local("down", "connect", settings=settings)
        drop_slot(settings)
    recreate_database(admin, TEST_DATABASE)
    upgrade(settings.sqlalchemy_url)
    return settings


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """Per-test settings: an emptied database and topics of the test's own."""
    with psycopg.connect(base_settings.psycopg_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in TABLES))
        )
    return isolated_topics(base_settings)


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database, for arranging and asserting."""
    with psycopg.connect(settings.psycopg_conninfo, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The API's async engine on the test database."""
    engine = create_engine(settings, "tests")
    yield engine
    await engine.dispose()


Spawn = Callable[[str, Settings], Process]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start a console script as a real process; all are stopped at teardown.

    Each process listens on free ports, never on one a running system holds
    (:func:`tests.support.processes.with_free_ports`); ``process.port`` says where.
    """
    started: list[Process] = []

    def _spawn(command: str, settings: Settings) -> Process:
        process = Process(command, settings, tmp_path)
        started.append(process)
        return process

    yield _spawn
    for process in reversed(started):
        process.terminate()
