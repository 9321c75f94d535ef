"""Settings: one validated source, from the environment with the PREQUAL_ prefix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runtime.settings import RelayKind, Settings


def test_settings_come_from_prefixed_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREQUAL_PG_PORT", "6543")
    monkeypatch.setenv("PREQUAL_RELAY", "debezium")

    settings = Settings()

    assert settings.pg_port == 6543
    assert settings.relay is RelayKind.DEBEZIUM


def test_database_urls_quote_the_credentials() -> None:
    settings = Settings(pg_user="app user", pg_password="p@ss/w:rd")

    assert settings.psycopg_conninfo.startswith("postgresql://app%20user:p%40ss%2Fw%3Ard@")
    assert settings.sqlalchemy_url.startswith("postgresql+psycopg://app%20user:")


def test_an_invalid_value_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREQUAL_RELAY", "carrier-pigeon")

    with pytest.raises(ValidationError, match="relay"):
        Settings()


def test_the_password_is_not_printed_with_the_settings() -> None:
    assert "prequal" not in repr(Settings().pg_password)
