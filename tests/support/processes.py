"""Run prequal's console scripts as real processes, the way ``make run`` does.

A process a test starts never binds a port a running system holds: every listening port
still at what ``make run`` would use (the Settings default, or what the environment and
``.env`` configure) is moved to a free one (:func:`with_free_ports`), so the suite runs
beside a running system on the same machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREQUAL_")}
    return {**env, **settings.as_environment()}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    (port,) = free_ports(1)
    return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 nobody listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:  # all bound at once, so the kernel hands out distinct ports
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


#: The Settings field of the port each console script listens on (/health, /metrics).
LISTEN_PORT_FIELDS = {
    "command-api": "command_api_port",
    "query-api": "query_api_port",
    "query-projector": "projector_metrics_port",
    "outbox-relay": "relay_metrics_port",
    "credit-worker": "credit_worker_metrics_port",
    "decision-worker": "decision_worker_metrics_port",
}


def system_ports() -> dict[str, set[int]]:
    """Per listening-port field, the ports a running system may hold on this machine.

    Its default and what ``Settings()`` reads from the environment and ``.env`` here: the
    ports ``make run`` binds.
    """
    configured = Settings()
    return {
        field: {Settings.model_fields[field].default, getattr(configured, field)}
        for field in LISTEN_PORT_FIELDS.values()
    }


def with_free_ports(settings: Settings) -> Settings:
    """``settings`` with each listening port a running system may hold moved to a free one.

    A port the test chose itself (any other value) is kept, so a test can still reach a
    process, or restart it, on a port it knows.
    """
    update = {
        field: free_port()
        for field, held in system_ports().items()
        if getattr(settings, field) in held
    }
    return settings.model_copy(update=update) if update else settings


class Process:
    """One console script running in its own process group, its output in a log file.

    It runs with ``with_free_ports(settings)``, kept as :attr:`settings`: ask those (or
    :attr:`port`) where it listens.
    """

    def __init__(self, command: str, settings: Settings, log_dir: Path) -> None:
        self.command = command
        self.settings = with_free_ports(settings)
        self.log_path = log_dir / f"{command}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [command],
            env=settings_env(self.settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    @property
    def port(self) -> int:
        """The port this console script listens on; KeyError for one that listens on none."""
        port: int = getattr(self.settings, LISTEN_PORT_FIELDS[self.command])
        return port

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout_s: float = 30.0) -> None:
        """Wait until ``needle`` appears in the log (or fail with the log)."""
        wait_until(lambda: needle in self.log(), timeout_s, self.describe)

    def describe(self) -> str:
        """The process's state and log, for failure messages."""
        return f"{self.command} (exit {self.popen.poll()}):\n{self.log()[-4000:]}"

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.popen.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group: no chance to clean up."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    describe: Callable[[], str] = lambda: "",
    interval_s: float = 0.1,
) -> None:
    """Poll ``condition`` until it holds; fail with ``describe()`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s\n{describe()}")


def wait_http_ok(url: str, timeout_s: float, process: Process) -> None:
    """Wait until ``url`` answers 200."""

    def ok() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(process.describe())
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ok, timeout_s, process.describe)


def run_ops(
    settings: Settings, *args: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``prequal-ops ARGS`` as an operator would, with ``answer`` typed at its prompt."""
    return subprocess.run(
        ["prequal-ops", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        input=answer,
        timeout=60,
        check=False,
    )
