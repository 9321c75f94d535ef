"""Secrets come from settings only; outside development a placeholder refuses to start."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from runtime.settings import Environment, Settings
from tests.support.processes import ROOT

PLACEHOLDERS = ["", "   ", "prequal", "PREQUAL", "changeme", "ChangeMe", "password", "secret"]


@pytest.fixture(autouse=True)
def _an_identity_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    # Production also needs an https JWKS URL; these tests are about the secrets.
    monkeypatch.setenv("PREQUAL_AUTH_JWKS_URL", "https://idp.example/.well-known/jwks.json")


def test_development_is_the_default_and_accepts_the_shipped_password() -> None:
    settings = Settings()

    assert settings.environment is Environment.DEVELOPMENT
    assert settings.pg_password.get_secret_value() == "prequal"


@pytest.mark.parametrize("environment", ["test", "production"])
@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_outside_development_a_placeholder_password_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, environment: str, placeholder: str
) -> None:
    monkeypatch.setenv("PREQUAL_ENVIRONMENT", environment)
    monkeypatch.setenv("PREQUAL_PG_PASSWORD", placeholder)

    with pytest.raises(ValidationError, match="PREQUAL_PG_PASSWORD") as refused:
        Settings()

    assert f"PREQUAL_ENVIRONMENT={environment}" in str(refused.value)


def test_the_refused_placeholder_itself_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREQUAL_ENVIRONMENT", "production")
    monkeypatch.setenv("PREQUAL_PG_PASSWORD", "ChangeMe")

    with pytest.raises(ValidationError) as refused:
        Settings()

    assert "ChangeMe" not in str(refused.value)


def test_outside_development_the_default_password_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREQUAL_ENVIRONMENT", "production")
    monkeypatch.delenv("PREQUAL_PG_PASSWORD", raising=False)

    with pytest.raises(ValidationError, match="PREQUAL_PG_PASSWORD"):
        Settings()


def test_outside_development_a_real_password_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREQUAL_ENVIRONMENT", "production")
    monkeypatch.setenv("PREQUAL_PG_PASSWORD", "k8#Vq2!rT9w")

    settings = Settings()

    assert settings.environment is Environment.PRODUCTION
    assert settings.pg_password.get_secret_value() == "k8#Vq2!rT9w"


def test_a_refused_setting_never_prints_the_values_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREQUAL_PG_PASSWORD", "k8#Vq2!rT9w")
    monkeypatch.setenv("PREQUAL_PG_PORT", "not-a-port")

    with pytest.raises(ValidationError, match="pg_port") as refused:
        Settings()

    assert "k8#Vq2!rT9w" not in str(refused.value)


def test_an_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREQUAL_ENVIRONMENT", "staging-ish")

    with pytest.raises(ValidationError, match="environment"):
        Settings()


def test_child_processes_inherit_the_environment_setting() -> None:
    env = Settings(environment=Environment.TEST, pg_password="k8#Vq2!rT9w").as_environment()

    assert env["PREQUAL_ENVIRONMENT"] == "test"


def test_a_process_started_in_production_with_the_default_password_exits_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from runtime.settings import Settings; Settings()"],
        env={
            "PREQUAL_ENVIRONMENT": "production",
            "PREQUAL_AUTH_JWKS_URL": "https://idp.example/.well-known/jwks.json",
            "PATH": "/usr/bin:/bin",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "PREQUAL_PG_PASSWORD is empty or a placeholder" in result.stderr


def test_cors_origins_are_a_comma_separated_list_and_empty_by_default() -> None:
    assert Settings().cors_origins == []
    assert Settings(cors_allow_origins=" https://a.example, ,https://b.example ").cors_origins == [
        "https://a.example",
        "https://b.example",
    ]
