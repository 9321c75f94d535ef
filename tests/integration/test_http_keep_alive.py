"""HTTP keep-alive: the server closes an idle connection last, never under a reusing client.

A client that sends a request on a pooled connection at the moment the server closes it
gets a reset, not an answer (seen in CI as ``httpx.ReadError`` when httpx's 5 s pool
expiry met uvicorn's 5 s default). The services keep idle connections open for
``Settings.http_keep_alive_s`` (75 s), longer than httpx or a load balancer keeps them;
under granian too (hyper's header read timeout, which also bounds an idle connection).
"""

from __future__ import annotations

import http.client
import time

import httpx
import pytest

from runtime.settings import Settings
from tests.conftest import Spawn
from tests.support.processes import wait_http_ok

HTTPX_POOL_EXPIRY_S = httpx.Limits().keepalive_expiry or 0.0


def _get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def test_the_default_keep_alive_outlasts_the_httpx_connection_pool() -> None:
    assert Settings().http_keep_alive_s > HTTPX_POOL_EXPIRY_S


def test_a_connection_idle_longer_than_httpx_keeps_one_is_still_served(
    settings: Settings, spawn: Spawn
) -> None:
    api = spawn("query-api", settings)
    wait_http_ok(f"http://127.0.0.1:{api.port}/livez", 60, api)
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    assert _get(conn, "/livez") == 200
    first_socket = conn.sock

    time.sleep(HTTPX_POOL_EXPIRY_S + 1)

    assert _get(conn, "/livez") == 200
    assert conn.sock is first_socket  # the same connection, not a reconnect
    conn.close()


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_the_server_closes_a_connection_idle_past_its_keep_alive(
    server: str, settings: Settings, spawn: Spawn
) -> None:
    update = {"http_keep_alive_s": 1, "command_api_http_server": server}
    api = spawn("command-api", settings.model_copy(update=update))
    wait_http_ok(f"http://127.0.0.1:{api.port}/livez", 60, api)
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    assert _get(conn, "/livez") == 200
    assert conn.sock is not None

    # The server ends the idle connection itself: the next read sees its end of stream.
    assert conn.sock.recv(1) == b""
    conn.close()
