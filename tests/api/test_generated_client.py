"""A client generated from each OpenAPI document, as an integrator would, parses every answer.

openapi-python-client (pinned by infra/install-openapi-client.sh) generates a client from
each API's document with no warning; the clients then talk to the APIs on the real
database and parse each documented status into its model: the 202 and 200 bodies, and
the one ``Problem`` model for 401, 403, 404, 413, 415, 422, 429 and 503 alike. (409, a
key still in flight, has no reliable trigger from one test client; it is the same
``Problem`` reference in the document.)
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from command_api.app import create_app as command_app
from query_api.app import create_app as query_app
from runtime.settings import Settings
from tests.support.auth import bearer
from tests.support.db import table_locked

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / ".infra" / "openapi-client" / "bin" / "openapi-python-client"


@pytest.fixture(scope="module")
def generator() -> Path:
    """The pinned generator, installed on first use."""
    subprocess.run([str(ROOT / "infra" / "install-openapi-client.sh")], check=True)
    return GENERATOR


def _generate(generator: Path, app: FastAPI, out: Path, name: str) -> str:
    """Generate a client package ``name`` under ``out`` from ``app``'s document; the output."""
    document = out / f"{name}.json"
    document.write_text(json.dumps(app.openapi()))
    done = subprocess.run(
        [
            str(generator),
            *("generate", "--path", str(document), "--meta", "none"),
            *("--output-path", str(out / name)),
        ],
        capture_output=True,
        text=True,
        check=True,
        # Its formatting hook runs ruff, which is this project's.
        env={"PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin"},
    )
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def clients(generator: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Each API's generated package (imported by name) and what the generator printed."""
    out = tmp_path_factory.mktemp("generated")
    printed = {
        "prequal_command_client": _generate(
            generator, command_app(Settings()), out, "prequal_command_client"
        ),
        "prequal_query_client": _generate(
            generator, query_app(Settings()), out, "prequal_query_client"
        ),
    }
    sys.path.insert(0, str(out))
    yield printed
    sys.path.remove(str(out))


def test_each_document_generates_a_client_without_a_warning(clients: dict[str, str]) -> None:
    for name, printed in clients.items():
        assert "Warning" not in printed, f"{name}:\n{printed}"


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.fixture
async def command(settings: Settings) -> AsyncIterator[FastAPI]:
    # A short deadline: the 503 case holds a lock that long, not the default 2 s.
    app = command_app(settings.model_copy(update={"db_deadline_s": 0.5}))
    async with app.router.lifespan_context(app):
        yield app


def _client(package: str, app: FastAPI, settings: Settings, scopes: Any = None) -> Any:
    token = bearer(settings)["Authorization"].removeprefix("Bearer ")
    if scopes is not None:
        token = bearer(settings, scopes=scopes)["Authorization"].removeprefix("Bearer ")
    return _module(package).AuthenticatedClient(
        base_url="http://api", token=token, httpx_args={"transport": httpx.ASGITransport(app=app)}
    )


def _request(package: str, **overrides: Any) -> Any:
    models = _module(f"{package}.models")
    fields = {
        "pan_number": "ABCDE1234F",
        "applicant_name": "Asha Verma",
        "monthly_income_inr": "80000.00",
        "loan_amount_inr": "500000.00",
        "loan_type": models.LoanType("PERSONAL"),
        **overrides,
    }
    return models.ApplicationRequest(**fields)


async def test_the_generated_command_client_parses_202_401_409_422_and_503(
    clients: dict[str, str], command: FastAPI, settings: Settings
) -> None:
    package = "prequal_command_client"
    submit = _module(f"{package}.api.applications.submit_application")
    models = _module(f"{package}.models")
    client = _client(package, command, settings)

    accepted = await submit.asyncio_detailed(client=client, body=_request(package))
    assert accepted.status_code == 202
    assert isinstance(accepted.parsed, models.ApplicationAccepted)
    assert accepted.headers["location"].endswith(f"/{accepted.parsed.application_id}/status")

    invalid = await submit.asyncio_detailed(
        client=client, body=_request(package, pan_number="not-a-pan")
    )
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, models.Problem)
    assert invalid.parsed.errors[0].field == "pan_number"

    key = f"generated-{uuid.uuid4()}"
    first = await submit.asyncio_detailed(
        client=client, body=_request(package), idempotency_key=key
    )
    replayed = await submit.asyncio_detailed(
        client=client, body=_request(package), idempotency_key=key
    )
    assert isinstance(replayed.parsed, models.ApplicationAccepted)
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.parsed.application_id == first.parsed.application_id
    other = await submit.asyncio_detailed(
        client=client, body=_request(package, applicant_name="Someone Else"), idempotency_key=key
    )
    assert other.status_code == 422
    assert isinstance(other.parsed, models.Problem)

    anonymous = _module(package).Client(
        base_url="http://api", httpx_args={"transport": httpx.ASGITransport(app=command)}
    )
    refused = await submit.asyncio_detailed(client=anonymous, body=_request(package))
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Problem)

    with table_locked(settings, "applications"):
        unavailable = await submit.asyncio_detailed(client=client, body=_request(package))
    assert unavailable.status_code == 503
    assert isinstance(unavailable.parsed, models.Problem)
    assert unavailable.parsed.outcome.value in ("not_stored", "unknown")
    assert int(unavailable.headers["retry-after"]) >= 1


async def test_the_generated_query_client_parses_200_404_and_422(
    clients: dict[str, str], command: FastAPI, settings: Settings
) -> None:
    query = query_app(settings)
    async with query.router.lifespan_context(query):
        submit = _module("prequal_command_client.api.applications.submit_application")
        accepted = await submit.asyncio_detailed(
            client=_client("prequal_command_client", command, settings),
            body=_request("prequal_command_client"),
        )
        package = "prequal_query_client"
        status = _module(f"{package}.api.applications.get_application_status")
        models = _module(f"{package}.models")
        client = _client(package, query, settings)

        found = await status.asyncio_detailed(accepted.parsed.application_id, client=client)
        assert found.status_code == 200
        assert isinstance(found.parsed, models.ApplicationStatusResponse)
        assert found.parsed.status.value == "PENDING"

        missing = await status.asyncio_detailed(uuid.uuid4(), client=client)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Problem)

        # A path that is no UUID: the generated client sends only UUIDs, so ask directly.
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=query),
            base_url="http://api",
            headers=bearer(settings),
        ) as raw:
            bad = await raw.get("/applications/not-a-uuid/status")
        assert bad.status_code == 422
        assert isinstance(models.Problem.from_dict(bad.json()), models.Problem)


async def test_the_generated_command_client_parses_403_413_415_and_429_as_problems(
    clients: dict[str, str], settings: Settings
) -> None:
    # One request a minute, one in the bucket: the second request is over the rate.
    limited = settings.model_copy(update={"rate_limit_per_s": 1 / 60, "rate_limit_burst": 1})
    app = command_app(limited)
    package = "prequal_command_client"
    submit = _module(f"{package}.api.applications.submit_application")
    models = _module(f"{package}.models")
    async with app.router.lifespan_context(app):
        read_only = _client(package, app, limited, scopes=["applications:read"])
        forbidden = await submit.asyncio_detailed(client=read_only, body=_request(package))
        assert forbidden.status_code == 403
        assert isinstance(forbidden.parsed, models.Problem)

        client = _client(package, app, limited)
        first = await submit.asyncio_detailed(client=client, body=_request(package))
        limited_out = await submit.asyncio_detailed(client=client, body=_request(package))
        assert first.status_code == 202
        assert limited_out.status_code == 429
        assert isinstance(limited_out.parsed, models.Problem)
        assert int(limited_out.headers["retry-after"]) >= 1

        # Bodies the generated client never sends: the raw answers through its parser.
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers=bearer(limited, client="another-client"),
        ) as raw:
            too_large = await raw.post(
                "/applications",
                content=b"{" + b" " * (limited.http_max_body_bytes + 1) + b"}",
                headers={"Content-Type": "application/json"},
            )
            not_json = await raw.post(
                "/applications", content=b"pan=ABCDE1234F", headers={"Content-Type": "text/plain"}
            )
    for answer, status in ((too_large, 413), (not_json, 415)):
        parsed = submit._build_response(client=client, response=answer)
        assert parsed.status_code == status
        assert isinstance(parsed.parsed, models.Problem)
