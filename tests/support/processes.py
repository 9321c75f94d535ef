"""Run prequal's console scripts as real processes, the way ``make run`` does."""

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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """One console script running in its own process group, its output in a log file."""

    def __init__(self, command: str, settings: Settings, log_dir: Path) -> None:
        self.command = command
        self.log_path = log_dir / f"{command}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [command],
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

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
