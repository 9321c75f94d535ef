"""/health and /metrics of the loop processes, served beside the loop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from runtime.observability import ObservabilityServer, run_checks
from runtime.process import LoopStalled, StopSignal, loop_liveness


def _ok() -> None:
    return None


def _down() -> None:
    raise ConnectionError("refused")


def test_all_checks_passing_is_200_with_each_state() -> None:
    assert run_checks({"database": _ok, "kafka": _ok}) == (
        200,
        {"status": "ok", "checks": {"database": "ok", "kafka": "ok"}},
    )


def test_a_failing_check_is_a_503_problem_naming_it() -> None:
    status, body = run_checks({"database": _ok, "kafka": _down})

    assert status == 503
    assert body["detail"] == "kafka is not answering"
    assert body["checks"] == {"database": "ok", "kafka": "unavailable"}
    assert body["type"] == "urn:prequal:problem:dependency-unavailable"


def test_two_failing_checks_are_both_named() -> None:
    _, body = run_checks({"database": _down, "kafka": _down})

    assert body["detail"] == "database, kafka are not answering"


@pytest.fixture
def server() -> Iterator[str]:
    running = ObservabilityServer("127.0.0.1", 0, {"kafka": _down}).start()
    yield f"http://127.0.0.1:{running.port}"
    running.stop()


def test_the_server_answers_health_metrics_and_a_404_problem(server: str) -> None:
    health = httpx.get(f"{server}/health")
    metrics = httpx.get(f"{server}/metrics")
    missing = httpx.get(f"{server}/nowhere")

    assert health.status_code == 503
    assert health.headers["content-type"] == "application/problem+json"
    assert metrics.status_code == 200
    assert "python_info" in metrics.text or "process_" in metrics.text or "# HELP" in metrics.text
    assert missing.status_code == 404
    assert missing.json()["instance"] == "/nowhere"


def test_head_answers_like_get_without_the_body(server: str) -> None:
    for path, status in (("/health", 503), ("/metrics", 200), ("/nowhere", 404)):
        get = httpx.get(f"{server}{path}")
        head = httpx.head(f"{server}{path}")

        assert head.status_code == get.status_code == status, path
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        if path != "/metrics":  # the series change between two scrapes
            assert head.headers["content-length"] == get.headers["content-length"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "BREW"])
def test_any_other_method_is_a_405_problem_naming_get_and_head(server: str, method: str) -> None:
    response = httpx.request(method, f"{server}/health")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 405


def test_no_answer_may_be_stored_by_a_cache(server: str) -> None:
    for path in ("/health", "/metrics", "/nowhere"):
        assert httpx.get(f"{server}{path}").headers["cache-control"] == "no-store"


def test_a_check_that_does_not_answer_is_unavailable_at_the_deadline() -> None:
    release = threading.Event()

    def silent() -> None:
        release.wait(10)

    try:
        status, body = run_checks({"database": silent, "kafka": _ok}, deadline_s=0.2)
    finally:
        release.set()

    assert status == 503
    assert body["checks"] == {"database": "unavailable", "kafka": "ok"}


def test_livez_answers_for_the_loop_alone_while_readiness_names_the_dependency() -> None:
    stop = StopSignal()
    running = ObservabilityServer(
        "127.0.0.1", 0, {"kafka": _down}, liveness=loop_liveness(stop, 60)
    ).start()
    url = f"http://127.0.0.1:{running.port}"
    try:
        livez = httpx.get(f"{url}/livez")
        readyz = httpx.get(f"{url}/readyz")
        health = httpx.get(f"{url}/health")
        head = httpx.head(f"{url}/livez")
    finally:
        running.stop()

    assert livez.status_code == 200, "a broker outage must not get a live process restarted"
    assert livez.json() == {"status": "ok", "checks": {"loop": "ok"}}
    assert readyz.status_code == health.status_code == 503
    assert readyz.json()["checks"] == {"kafka": "unavailable"}
    assert head.status_code == 200
    assert head.content == b""


def test_a_loop_that_stopped_consulting_its_stop_signal_is_not_alive() -> None:
    stop = StopSignal()
    check = loop_liveness(stop, stale_after_s=0.05)
    stop.is_set()
    check()  # just ran

    time.sleep(0.1)

    with pytest.raises(LoopStalled):
        check()
    stop.wait(0.01)  # a loop sleeping between retries is alive again
    check()


@pytest.mark.parametrize(
    ("module", "exported"),
    [("credit_worker.main", False), ("decision_worker.main", False), ("outbox.relay_main", True)],
)
def test_only_the_relaying_process_exports_the_relays_series(module: str, exported: bool) -> None:
    probe = (
        f"import {module}; from prometheus_client import REGISTRY, generate_latest;"
        " print(b'prequal_relay_published_events_total' in generate_latest(REGISTRY))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()

    assert answer == str(exported)
