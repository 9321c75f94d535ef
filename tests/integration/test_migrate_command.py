"""``prequal-migrate``: the console script behind ``make migrate``."""

from __future__ import annotations

import subprocess

import psycopg

from runtime.settings import Settings
from tests.support.processes import settings_env


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["prequal-migrate", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_migrate_upgrade_is_idempotent_on_a_migrated_database(settings: Settings) -> None:
    result = _run(settings, "upgrade", "head")

    assert result.returncode == 0, result.stderr
    with psycopg.connect(settings.psycopg_conninfo) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0003",)


def test_an_unknown_migrate_action_is_refused_with_usage(settings: Settings) -> None:
    result = _run(settings, "sideways")

    assert result.returncode != 0
    assert "usage: prequal-migrate" in result.stderr
