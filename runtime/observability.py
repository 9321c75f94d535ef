"""``/health``, ``/livez``, ``/readyz`` and ``/metrics`` for the processes without an API.

The relay and the workers are plain loops; this serves their health checks and the
Prometheus registry from a small threaded HTTP server beside the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from runtime.errors import DependencyUnavailable
from runtime.logging import get_logger
from runtime.problems import problem_body

#: A named check: returns normally when the dependency answers, raises otherwise.
Check = Callable[[], None]

_log = get_logger(__name__)


#: Threads that run health checks; a check stuck on a silent server keeps its thread
#: until its own timeout ends it, and /health answers without waiting for it.
_CHECKS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health-check")


def run_checks(checks: Mapping[str, Check], deadline_s: float = 2.0) -> tuple[int, dict[str, Any]]:
    """Run every check at once; 200 with their states, or 503 problem naming the failures.

    The whole answer is bounded by ``deadline_s``: a check that has not answered by then
    counts as unavailable ("no answer within … s"), whatever it is still waiting for.
    """
    started = {name: _CHECKS.submit(check) for name, check in checks.items()}
    wait(started.values(), timeout=deadline_s)
    states: dict[str, str] = {}
    failed: list[str] = []
    for name, future in started.items():
        if not future.done():
            states[name] = "unavailable"
            failed.append(name)
            _log.warning(
                "health.check_failed", check=name, error=f"no answer within {deadline_s:g} s"
            )
            continue
        error = future.exception()
        if error is None:
            states[name] = "ok"
        else:
            states[name] = "unavailable"
            failed.append(name)
            _log.warning("health.check_failed", check=name, error=str(error))
    if not failed:
        return 200, {"status": "ok", "checks": states}
    problem = DependencyUnavailable(failed[0])
    body = problem_body(
        status=503,
        title=problem.title,
        detail=", ".join(failed) + (" is" if len(failed) == 1 else " are") + " not answering",
        slug=problem.slug,
        instance="/health",
        correlation_id=None,
    )
    body["checks"] = states
    return 503, body


class ObservabilityServer:
    """Serves ``GET /health`` and ``GET /metrics`` in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        checks: Mapping[str, Check],
        deadline_s: float = 2.0,
        liveness: Check | None = None,
    ) -> None:
        checks = dict(checks)
        alive = {"loop": liveness} if liveness is not None else {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(head=False)

            def do_HEAD(self) -> None:
                # RFC 9110 §9.3.2: the GET answer's status and headers, without the body.
                self._answer(head=True)

            def _answer(self, head: bool) -> None:
                if self.path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY), head)
                elif self.path in ("/health", "/readyz", "/livez"):
                    # /readyz: may it get work (dependencies answer, partitions assigned);
                    # /health: the same, its contract since the start; /livez: is the
                    # process's loop running at all (a restart helps only if not).
                    probe = alive if self.path == "/livez" else checks
                    status, body = run_checks(probe, deadline_s)
                    kind = "application/json" if status == 200 else "application/problem+json"
                    self._send(status, kind, orjson.dumps(body), head)
                else:
                    self._problem(404, "Not found", "Not Found", head=head)

            def send_error(
                self, code: int, message: str | None = None, explain: str | None = None
            ) -> None:
                """Every error in the one problem shape (the base class writes HTML)."""
                if code == 501:  # a method this server has no handler for
                    self._problem(
                        405, "Method not allowed", "Method Not Allowed", {"Allow": "GET, HEAD"}
                    )
                else:
                    self._problem(code, "HTTP error", message or explain or "HTTP error")

            def _problem(
                self,
                status: int,
                title: str,
                detail: str,
                headers: dict[str, str] | None = None,
                head: bool = False,
            ) -> None:
                body = problem_body(
                    status=status,
                    title=title,
                    detail=detail,
                    slug=title.lower().replace(" ", "-"),
                    # Unset when the request line itself could not be parsed.
                    instance=getattr(self, "path", "/"),
                    correlation_id=None,
                )
                self._send(status, "application/problem+json", orjson.dumps(body), head, headers)

            def _send(
                self,
                status: int,
                content_type: str,
                body: bytes,
                head: bool,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Scrapes every few seconds would drown the log; stay quiet."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ObservabilityServer:
        """Start serving in the background."""
        self._thread.start()
        _log.info("observability.listening", port=self.port)
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
