"""A PostgreSQL and a Kafka of the fault suite's own, reached through Toxiproxy.

The network-fault tests freeze, blackhole and reset their servers, so they never use the
servers the rest of the suite (and other people) share: :func:`fault_rig` starts a second
pair with ``infra/local.sh`` in ``.infra/fault`` on free ports, puts a Toxiproxy proxy in
front of each, and stops everything at the end of the session. The six processes reach
both servers only through the proxies; the tests' own checks go to PostgreSQL directly.

The fixtures have names of their own (``fault_*``): tests/fault/test_drills.py in the same
directory keeps using the shared servers of tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from runtime.settings import Settings
from schema.migrate import upgrade
from tests.conftest import TABLES, Spawn
from tests.support.infra import LOCAL_SH, recreate_database
from tests.support.kafka import isolated_topics
from tests.support.pipeline import Pipeline, start_pipeline
from tests.support.processes import free_port
from tests.support.toxiproxy import Proxy, Toxiproxy, ToxiproxyServer

ROOT = Path(__file__).resolve().parents[2]
#: Kept between runs so Kafka's jars are resolved once; the servers are stopped at the end.
INFRA_DIR = ROOT / ".infra" / "fault"
DATABASE = "prequal_fault"


@dataclass(frozen=True)
class FaultRig:
    """The fault suite's servers, their proxies and the settings reaching them.

    ``settings`` is what the six processes use (PostgreSQL and Kafka through the
    proxies); ``direct`` reaches PostgreSQL without the proxy, for the tests' checks.
    """

    settings: Settings
    direct: Settings
    toxiproxy: Toxiproxy
    postgres: Proxy
    kafka: Proxy
    infra_env: dict[str, str]

    def postgres_pids(self) -> list[int]:
        """The postmaster's pid, then its children's: every process of our cluster.

        Raises AssertionError if the pid file does not name a postmaster on our port,
        so that a stale file can never make the suite signal somebody else's server.
        """
        lines = (INFRA_DIR / "pg" / "data" / "postmaster.pid").read_text().splitlines()
        postmaster, port = int(lines[0]), int(lines[3])
        assert port == self.direct.pg_port, f"postmaster.pid names port {port}"
        children = [pid for pid in _pids() if _parent(pid) == postmaster]
        return [postmaster, *children]

    def kafka_pid(self) -> int:
        """The broker JVM's pid (checked against its command line, like local.sh does)."""
        pid = int((INFRA_DIR / "run" / "kafka.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "kafka.Kafka" in cmdline, cmdline
        assert str(INFRA_DIR) in cmdline, cmdline
        return pid

    @contextmanager
    def frozen(self, pids: list[int]) -> Iterator[None]:
        """SIGSTOP ``pids`` (first to last) for the ``with`` block, then SIGCONT them all.

        A stopped process keeps its sockets open and answers nothing: the kernel still
        accepts connections and buffers data, which is what a hung server looks like.
        """
        stopped: list[int] = []
        try:
            for pid in pids:
                if _signal(pid, signal.SIGSTOP):
                    stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                _signal(pid, signal.SIGCONT)

    def frozen_postgres(self) -> AbstractContextManager[None]:
        """Context: every PostgreSQL process stopped (postmaster first, so it forks none)."""
        return self.frozen(self.postgres_pids())

    def frozen_kafka(self) -> AbstractContextManager[None]:
        """Context: the broker (and its KRaft controller, the same JVM) stopped."""
        return self.frozen([self.kafka_pid()])

    def thaw(self) -> None:
        """SIGCONT every server process and remove every toxic (a failed test's leftovers)."""
        for pid in [*self.postgres_pids(), self.kafka_pid()]:
            _signal(pid, signal.SIGCONT)
        self.toxiproxy.reset()


def _signal(pid: int, signum: signal.Signals) -> bool:
    """Send ``signum`` to ``pid``; False if it has exited since it was listed.

    PostgreSQL's backends come and go (a client disconnects, the autovacuum launcher
    starts a worker), so any pid read from ``/proc`` may be gone by the time it is
    signalled.
    """
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # exited meanwhile
        return None
    # The command name (2nd field) may contain spaces; what follows ") " is fixed.
    return int(stat.rsplit(") ", 1)[1].split()[1])


def _continue_leftovers() -> None:
    """SIGCONT our servers if an interrupted run left them stopped, so that down can stop them.

    Only processes whose command line names our infra dir are signalled.
    """
    for pid_file in (INFRA_DIR / "pg" / "data" / "postmaster.pid", INFRA_DIR / "run" / "kafka.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if str(INFRA_DIR) in cmdline:
            for each in [pid, *(child for child in _pids() if _parent(child) == pid)]:
                _signal(each, signal.SIGCONT)


def _local(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(LOCAL_SH), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"infra/local.sh {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


@pytest.fixture(scope="session")
def fault_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRig]:
    """Toxiproxy, then PostgreSQL and Kafka behind it, a migrated database; all stopped after.

    Kafka advertises the proxy's port (PREQUAL_KAFKA_ADVERTISED_PORT), so every client,
    and the broker's own transaction-marker requests, go through the proxy. Raises
    (failing the tests) when toxiproxy-server is not installed: see .ci/run.
    """
    pg_port, kafka_port, controller_port = free_port(), free_port(), free_port()
    pg_proxy_port, kafka_proxy_port, api_port = free_port(), free_port(), free_port()
    server = ToxiproxyServer(api_port, tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREQUAL_")}
    env.update(
        PREQUAL_INFRA_DIR=str(INFRA_DIR),
        PREQUAL_PG_PORT=str(pg_port),
        PREQUAL_KAFKA_PORT=str(kafka_port),
        PREQUAL_KAFKA_ADVERTISED_PORT=str(kafka_proxy_port),
        PREQUAL_KAFKA_CONTROLLER_PORT=str(controller_port),
        PREQUAL_CONNECT_PORT=str(free_port()),
    )
    try:
        # The proxies exist before the broker starts: its readiness check already
        # connects to the advertised port.
        postgres = server.api.create_proxy(
            "postgres", f"127.0.0.1:{pg_proxy_port}", f"127.0.0.1:{pg_port}"
        )
        kafka = server.api.create_proxy(
            "kafka", f"127.0.0.1:{kafka_proxy_port}", f"127.0.0.1:{kafka_port}"
        )
        _continue_leftovers()
        _local(env, "down")  # servers of an interrupted run (ours: same infra dir)
        # Every test makes topics of its own: start from none, or the broker's start-up
        # slows down run after run (the cluster id is kept, outside data/).
        shutil.rmtree(INFRA_DIR / "kafka" / "data", ignore_errors=True)
        _local(env, "up")
        try:
            direct = Settings(
                kafka_brokers=1,  # the rig's one broker, whatever the shell exported
                pg_port=pg_port,
                kafka_bootstrap_servers=f"127.0.0.1:{kafka_proxy_port}",
                pg_database=DATABASE,
                kafka_session_timeout_ms=6000,
                kafka_transaction_timeout_ms=10000,
                relay_poll_interval_s=0.5,
                relay_standby_retry_s=0.5,
                relay_delivery_timeout_ms=5000,
                # The drills' own development issuer, and no rate limit in reach.
                auth_dev_dir=str(tmp_path_factory.mktemp("fault-auth")),
                rate_limit_per_s=100_000.0,
                rate_limit_burst=100_000,
            )
            recreate_database(direct.model_copy(update={"pg_database": "prequal"}), DATABASE)
            upgrade(direct.sqlalchemy_url)
            yield FaultRig(
                settings=direct.model_copy(update={"pg_port": pg_proxy_port}),
                direct=direct,
                toxiproxy=server.api,
                postgres=postgres,
                kafka=kafka,
                infra_env=env,
            )
        finally:
            _local(env, "down")
    finally:
        server.stop()


@pytest.fixture
def fault_pipeline(fault_rig: FaultRig, spawn: Spawn) -> Iterator[Pipeline]:
    """The six processes on an emptied database and topics of their own, through the proxies.

    Before and after the test nothing is frozen and no toxic is left.
    """
    fault_rig.thaw()
    with psycopg.connect(fault_rig.direct.psycopg_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in TABLES))
        )
    pipeline = start_pipeline(isolated_topics(fault_rig.settings), spawn)
    try:
        yield pipeline
    finally:
        fault_rig.thaw()
