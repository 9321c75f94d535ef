"""The database password stays out of Kafka Connect's stored and shown connector config.

infra/debezium/outbox-connector.json says ``"database.password":
"${env:PREQUAL_PG_PASSWORD}"``; the worker (connect-standalone.properties:
``config.providers=env``) resolves that reference from its own environment only when it
hands the config to the connector and its task. So Connect's REST API (and, in distributed
mode, its config topic) holds the reference, never the password.

The module runs Connect as a role of its own with a random password, so "the password is
nowhere" is a search for a string that cannot occur by chance, and a delivered row proves
the worker resolved the reference: PostgreSQL checks passwords (scram-sha-256) over TCP.
``infra/local.sh up postgres`` creates that role (LOGIN REPLICATION CREATEDB) and sets its
password, as for any ``PREQUAL_PG_USER``; the role then owns a database of its own, which
this module creates, migrates and drops. The role itself stays (dropping a role needs
CREATEROLE, which the local roles lack); the next run sets a new password.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from runtime.kafka import ensure_topics
from runtime.settings import Settings
from schema.migrate import upgrade
from tests.support.infra import connect_running, local, recreate_database
from tests.support.kafka import consume, event_ids, has_events, isolated_topics
from tests.support.outbox import insert_many

ROOT = Path(__file__).resolve().parents[2]
ROLE = "prequal_cdc_secrets"
#: What the connector config holds instead of the password.
REFERENCE = "${env:PREQUAL_PG_PASSWORD}"


def _database_of_its_own(base: Settings, name: str) -> Settings:
    """Settings for a role ``ROLE`` with a fresh random password, owning database ``name``."""
    password = f"pw-{secrets.token_hex(16)}"
    own = base.model_copy(
        update={
            "pg_user": ROLE,
            "pg_password": SecretStr(password),
            "pg_database": name,
            "debezium_slot": f"{name}_outbox",
            "debezium_publication": f"{name}_outbox_pub",
        }
    )
    # Creates the role (or sets its new password) and a database it owns.
    local("up", "postgres", settings=own)
    # Recreated from the server's postgres database: a fresh one, whatever a past run left.
    recreate_database(own.model_copy(update={"pg_database": "postgres"}), name)
    upgrade(own.sqlalchemy_url)
    return own


def _drop_database(own: Settings, name: str) -> None:
    """Drop the role's database (its owner may), from the server's postgres database."""
    conninfo = own.model_copy(update={"pg_database": "postgres"}).psycopg_conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def secret_settings(base_settings: Settings) -> Iterator[Settings]:
    """Connect running as ``ROLE`` (random password) on that role's own migrated database."""
    name = f"{base_settings.pg_database}_secrets"
    own = _database_of_its_own(base_settings, name)
    try:
        with connect_running(own):
            yield own
    finally:
        _drop_database(own, name)


@pytest.fixture
def own_settings(secret_settings: Settings) -> Settings:
    """Per-test settings with topics of the test's own, created before rows route to them."""
    settings = isolated_topics(secret_settings)
    ensure_topics(settings)
    return settings


def _password(settings: Settings) -> str:
    return settings.pg_password.get_secret_value()


def _get(settings: Settings, path: str) -> tuple[str, Any]:
    """GET ``path`` of Connect's REST API: the body as text and as JSON."""
    response = httpx.get(f"{settings.connect_url}{path}", timeout=10)
    response.raise_for_status()
    return response.text, response.json()


def _infra_dir() -> Path:
    """Where infra/local.sh keeps Connect's files (its own default when the variable is unset)."""
    return Path(os.environ.get("PREQUAL_INFRA_DIR") or ROOT / ".infra")


def test_the_registered_connector_config_holds_a_reference_not_the_database_password(
    secret_settings: Settings,
) -> None:
    name = secret_settings.debezium_connector

    text, config = _get(secret_settings, f"/connectors/{name}/config")

    assert config["database.user"] == ROLE
    assert config["database.password"] == REFERENCE
    assert _password(secret_settings) not in text


def test_the_task_configs_connect_derives_from_it_hold_the_reference_too(
    secret_settings: Settings,
) -> None:
    # In distributed mode task configs are written to the config topic as well.
    text, tasks = _get(secret_settings, f"/connectors/{secret_settings.debezium_connector}/tasks")

    assert tasks, "the connector has no task"
    assert _password(secret_settings) not in text
    for task in tasks:
        assert task["config"]["database.password"] == REFERENCE, task["id"]


def test_neither_the_rendered_connector_file_nor_the_connect_log_holds_the_password(
    secret_settings: Settings,
) -> None:
    connect_dir = _infra_dir() / "connect"
    connector_file = connect_dir / "outbox-connector.json"

    rendered = json.loads(connector_file.read_text())
    log = (_infra_dir() / "logs" / "connect.log").read_text(errors="replace")

    assert rendered["config"]["database.user"] == ROLE, "not this module's connector file"
    assert rendered["config"]["database.password"] == REFERENCE
    assert _password(secret_settings) not in log


def test_the_connector_logs_in_with_the_resolved_password_and_delivers_a_row(
    own_settings: Settings,
) -> None:
    [event_id] = insert_many(own_settings, 1)

    messages = consume(own_settings, own_settings.topic_submitted, until=has_events({event_id}))

    assert event_ids(messages) == [event_id]
