"""Network faults between prequal's processes and its servers, injected by Toxiproxy.

Toxiproxy (github.com/Shopify/toxiproxy) is a TCP proxy made for fault injection: each
proxy forwards one listen address to one upstream, and *toxics* added to it at run time
delay, drop or reset the traffic of every connection through it, open or new. Its server
is a Go program (``.ci/run`` builds it with ``go install``); this module starts it and
drives its REST API with httpx.

Why not a Python client from PyPI: the one published by Toxiproxy's authors' community,
``toxiproxy-python``, last released 0.1.1 in 2019, predates the v2 API's toxic attributes
and is untyped; the REST API needs a dozen lines of httpx, which the suite already uses.

Only the toxics the fault suite uses are wrapped:

* ``latency`` (``latency_ms`` ± ``jitter_ms`` on each chunk of data, one direction);
* ``timeout`` with ``timeout=0``: no data passes, the connection is held open (a
  blackhole); data sent meanwhile is dropped, not delivered later;
* ``reset_peer`` with ``timeout=0``: every connection is closed at once with a TCP RST.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parents[2]
#: Where ``.ci/run`` installs the server.
DEFAULT_SERVER = ROOT / ".infra" / "bin" / "toxiproxy-server"
SERVER_VARIABLE = "PREQUAL_TOXIPROXY_SERVER"
INSTALL_HINT = (
    "GOBIN=/tmp/toxiproxy go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0"
    f" && install -D /tmp/toxiproxy/server {DEFAULT_SERVER}  (or run .ci/run)"
)

Stream = Literal["upstream", "downstream"]
#: Both directions: client → server ("upstream") and server → client ("downstream").
BOTH: tuple[Stream, ...] = ("upstream", "downstream")


class ToxiproxyError(RuntimeError):
    """The Toxiproxy server is missing, did not start, or refused a request."""


def find_server() -> Path:
    """The toxiproxy-server binary: ``$PREQUAL_TOXIPROXY_SERVER``, ``.infra/bin``, or PATH.

    Raises :class:`ToxiproxyError`, with the command that installs it, when none exists.
    """
    configured = os.environ.get(SERVER_VARIABLE)
    if configured:
        return Path(configured)
    if DEFAULT_SERVER.is_file():
        return DEFAULT_SERVER
    on_path = shutil.which("toxiproxy-server")
    if on_path:
        return Path(on_path)
    raise ToxiproxyError(f"no toxiproxy-server binary; install it with:\n  {INSTALL_HINT}")


@dataclass(frozen=True)
class Proxy:
    """One proxy: connections to ``listen`` (host:port) are forwarded to ``upstream``."""

    api: Toxiproxy
    name: str
    listen: str
    upstream: str

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return int(self.listen.rsplit(":", 1)[1])

    def add_toxic(
        self,
        kind: str,
        stream: Stream,
        attributes: dict[str, Any],
        toxicity: float = 1.0,
    ) -> str:
        """Add a toxic of type ``kind`` to one direction; returns its name (to remove it).

        ``toxicity`` is the share of connections affected (1.0: all). Raises
        :class:`ToxiproxyError` if the server refuses it.
        """
        name = f"{kind}_{stream}"
        self.api.request(
            "POST",
            f"/proxies/{self.name}/toxics",
            {
                "name": name,
                "type": kind,
                "stream": stream,
                "toxicity": toxicity,
                "attributes": attributes,
            },
        )
        return name

    def remove_toxic(self, name: str) -> None:
        """Remove toxic ``name``; traffic flows normally again on every connection."""
        self.api.request("DELETE", f"/proxies/{self.name}/toxics/{name}")

    @contextmanager
    def toxics(
        self, kind: str, attributes: dict[str, Any], streams: tuple[Stream, ...] = BOTH
    ) -> Iterator[None]:
        """Toxic ``kind`` on ``streams`` for the duration of the ``with`` block."""
        added: list[str] = []
        try:
            for stream in streams:
                added.append(self.add_toxic(kind, stream, attributes))
            yield
        finally:
            for name in added:
                self.remove_toxic(name)

    def latency(self, latency_ms: int, jitter_ms: int = 0) -> AbstractContextManager[None]:
        """Context: the server's answers (downstream) wait ``latency_ms`` ± ``jitter_ms``.

        One direction only, so each request/response round trip gains about ``latency_ms``.
        """
        return self.toxics(
            "latency", {"latency": latency_ms, "jitter": jitter_ms}, streams=("downstream",)
        )

    def blackhole(self) -> AbstractContextManager[None]:
        """Context: no data passes either way; connections stay open, nothing is closed."""
        return self.toxics("timeout", {"timeout": 0})

    def reset_peer(self) -> AbstractContextManager[None]:
        """Context: every connection, open or new, is reset (TCP RST) at once."""
        return self.toxics("reset_peer", {"timeout": 0})


class Toxiproxy:
    """A client of one Toxiproxy server's REST API (``base_url``: http://host:port)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, timeout=5.0)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API call; its decoded JSON answer (None if empty).

        Raises :class:`ToxiproxyError` with the server's message on a non-2xx answer.
        """
        response = self._http.request(method, path, json=body)
        if response.status_code >= 300:
            raise ToxiproxyError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def version(self) -> str:
        """The server's version string; raises httpx.HTTPError if it does not answer."""
        return self._http.get("/version").text.strip()

    def create_proxy(self, name: str, listen: str, upstream: str) -> Proxy:
        """A new enabled proxy from ``listen`` to ``upstream`` (both host:port)."""
        self.request("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream})
        return Proxy(self, name, listen, upstream)

    def reset(self) -> None:
        """Remove every toxic and enable every proxy (the state between faults)."""
        self.request("POST", "/reset")

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()


class ToxiproxyServer:
    """A toxiproxy-server process on 127.0.0.1:``port``, its output in ``log_path``."""

    def __init__(self, port: int, log_path: Path, binary: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self._binary = binary or find_server()
        self._log = log_path.open("wb")
        self._popen = subprocess.Popen(
            [str(self._binary), "-host", "127.0.0.1", "-port", str(port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopped by pid, never by name
        )
        self.api = Toxiproxy(f"http://127.0.0.1:{port}")
        self._wait_ready(10.0)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                break
            try:
                self.api.version()
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise ToxiproxyError(
            f"toxiproxy-server did not answer on port {self.port}:\n"
            f"{self.log_path.read_text(errors='replace')[-2000:]}"
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); its proxies close."""
        self.api.close()
        if self._popen.poll() is None:
            os.killpg(self._popen.pid, signal.SIGTERM)
            try:
                self._popen.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(5)
        self._log.close()
