"""The command API in several worker processes, under each HTTP server: one port, metrics
summed over workers, a 413 over a real socket, JSON log lines at the set level, a dead
worker replaced, a clean stop."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from runtime.settings import Settings
from tests.api.conftest import valid_body
from tests.conftest import Spawn
from tests.support.auth import bearer
from tests.support.processes import Process, free_port, wait_http_ok, wait_until


def _accepted_total(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prequal_http_requests_total{") and 'status="202"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _two_workers(
    spawn: Spawn, settings: Settings, server: str, **update: object
) -> tuple[Process, str]:
    """The command API in two workers under ``server``, answering; it and its base URL."""
    settings = settings.model_copy(
        update={
            "command_api_port": free_port(),
            "command_api_workers": 2,
            "command_api_http_server": server,
            **update,
        }
    )
    api = spawn("command-api", settings)
    base = f"http://127.0.0.1:{settings.command_api_port}"
    wait_http_ok(f"{base}/health", 60, api)
    return api, base


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_two_workers_accept_on_one_port_and_metrics_count_every_workers_requests(
    server: str, settings: Settings, db: psycopg.Connection, spawn: Spawn
) -> None:
    api, base = _two_workers(spawn, settings, server)

    token = bearer(settings)
    # New connections each time, so that the kernel spreads them over both workers.
    statuses = [
        httpx.post(f"{base}/applications", json=valid_body(), headers=token, timeout=10).status_code
        for _ in range(40)
    ]
    scrapes = [httpx.get(f"{base}/metrics", timeout=10).text for _ in range(4)]
    # A body far over the limit is refused with the problem, not a reset connection.
    too_large = httpx.post(
        f"{base}/applications",
        content=b"{" + b" " * 2_000_000 + b"}",
        headers={**token, "Content-Type": "application/json"},
        timeout=10,
    )

    assert statuses == [202] * 40
    assert too_large.status_code == 413
    assert too_large.headers["Content-Type"] == "application/problem+json"
    assert db.execute("SELECT count(*) FROM applications").fetchone() == (40,)
    # Whichever worker answers the scrape reports all 40, not only its own share.
    assert {_accepted_total(text) for text in scrapes} == {40.0}
    children = _children(api.popen.pid)
    workers = [pid for pid in children if b"spawn_main" in _cmdline(pid)]
    assert len(workers) == 2
    assert api.terminate() == 0
    wait_until(lambda: not [pid for pid in children if _alive(pid)], 15)
    # Every line is JSON, the server's own included: one log format for the operator.
    lines = [orjson.loads(line) for line in api.log().splitlines() if line.strip()]
    assert {line["process"] for line in lines} == {"command-api"}
    assert sum(line["event"] == "request" for line in lines) >= 40


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc; Linux only, like the suite)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_a_worker_that_dies_is_replaced_and_the_server_logs_at_the_level_it_is_given(
    server: str, settings: Settings, spawn: Spawn
) -> None:
    api, base = _two_workers(spawn, settings, server, log_level="WARNING")

    def workers() -> list[int]:
        return [p for p in _children(api.popen.pid) if b"spawn_main" in _cmdline(p)]

    first = workers()
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)  # an OOM kill, say

    wait_until(lambda: len(workers()) == 2 and first[0] not in workers(), 30)
    # Under granian each worker listens on a socket of its own (SO_REUSEPORT): the killed
    # one may have been the only one listening yet, so serving resumes once one is ready.
    wait_http_ok(f"{base}/health", 30, api)
    assert api.terminate() == 0
    levels = {orjson.loads(line)["level"] for line in api.log().splitlines() if line.strip()}
    assert "info" not in levels
