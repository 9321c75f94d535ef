"""The Alembic migrations: reversible, and in step with the SQLAlchemy table definitions."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg import sql
from sqlalchemy import create_engine, pool

from runtime.settings import Settings
from schema.migrate import downgrade, upgrade
from schema.tables import metadata
from tests.support.infra import recreate_database

SCRATCH = "prequal_migrations_test"


@pytest.fixture
def scratch(base_settings: Settings) -> Iterator[Settings]:
    """An empty database of its own, dropped afterwards."""
    yield recreate_database(base_settings, SCRATCH)
    with psycopg.connect(base_settings.psycopg_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(SCRATCH)))


def _tables(settings: Settings) -> set[str]:
    with psycopg.connect(settings.psycopg_conninfo) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade_round_trips(scratch: Settings) -> None:
    upgrade(scratch.sqlalchemy_url)
    assert {
        "applications",
        "outbox",
        "outbox_replays",
        "inbox",
        "application_status",
        "idempotency_keys",
    } <= _tables(scratch)

    downgrade(scratch.sqlalchemy_url)
    assert _tables(scratch) == {"alembic_version"}

    upgrade(scratch.sqlalchemy_url)
    assert "applications" in _tables(scratch)


def test_the_table_definitions_match_the_migrated_schema(scratch: Settings) -> None:
    upgrade(scratch.sqlalchemy_url)
    engine = create_engine(scratch.sqlalchemy_url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()

    assert diff == []


def test_updated_at_is_kept_current_by_the_trigger(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO applications (id, pan_number, applicant_name, monthly_income_inr,"
        " loan_amount_inr, loan_type, status, created_at, updated_at) VALUES"
        " (gen_random_uuid(), 'ABCDE1234F', 'A', 1, 1, 'HOME', 'PENDING',"
        "  now() - interval '1 hour', now() - interval '1 hour')"
    )
    db.execute("UPDATE applications SET status = 'REJECTED', cibil_score = 610")

    row = db.execute("SELECT updated_at > created_at + interval '30 minutes' FROM applications")
    assert row.fetchone() == (True,)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", "'APPROVED'"),
        ("cibil_score", "299"),
        ("cibil_score", "901"),
        ("monthly_income_inr", "0"),
        ("loan_amount_inr", "-1"),
        ("loan_type", "'CAR'"),
    ],
)
def test_the_database_refuses_values_outside_the_rules(
    db: psycopg.Connection, column: str, value: str
) -> None:
    values = {
        "status": "'PENDING'",
        "cibil_score": "NULL",
        "monthly_income_inr": "1",
        "loan_amount_inr": "1",
        "loan_type": "'HOME'",
        column: value,
    }
    statement = (
        "INSERT INTO applications (id, pan_number, applicant_name, created_at, updated_at, "
        + ", ".join(values)
        + ") VALUES (gen_random_uuid(), 'ABCDE1234F', 'A', now(), now(), "
        + ", ".join(values.values())
        + ")"
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(statement)
