"""The system as processes: command-api and outbox-relay started as console scripts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from runtime.settings import Settings
from tests.conftest import Spawn
from tests.support.processes import Process, free_port, wait_http_ok


@dataclass(frozen=True)
class RunningSystem:
    """The processes of a running system and where to reach them."""

    settings: Settings
    command_url: str
    command_api: Process
    relay: Process


@pytest.fixture
def system(settings: Settings, spawn: Spawn) -> RunningSystem:
    """command-api and outbox-relay running against the test database and topics."""
    settings = settings.model_copy(
        update={"command_api_port": free_port(), "relay_metrics_port": free_port()}
    )
    command_api = spawn("command-api", settings)
    relay = spawn("outbox-relay", settings)
    url = f"http://{settings.http_host}:{settings.command_api_port}"
    wait_http_ok(f"{url}/health", 30, command_api)
    relay.wait_for_log("relay.active")
    return RunningSystem(settings, url, command_api, relay)
