"""The suite beside a running system: every port ``make run`` binds may be someone else's.

A developer runs the suite while ``make run`` serves on the same machine: its six processes
hold ports 8000-8005 and its servers 55432 (PostgreSQL), 9092/9093 (Kafka) and 8083 (Kafka
Connect). Here those ports are held by listeners of the test's own (or, when a running
system already holds one, by that system), and what the suite starts must come up anyway,
on ports of its own.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from runtime.kafka import ensure_topics, kafka_check
from runtime.settings import Settings
from tests.conftest import Spawn
from tests.support.backends import LocalBackend, run_local_sh, running_ports
from tests.support.processes import LISTEN_PORT_FIELDS, ROOT, free_port, wait_http_ok

#: What the six console scripts bind by default (the Settings defaults, 8000-8005).
PROCESS_PORTS = sorted(Settings.model_fields[f].default for f in LISTEN_PORT_FIELDS.values())
#: infra/local.sh's defaults: PostgreSQL, Kafka, Kafka's controller, Kafka Connect.
SERVER_PORTS = [55432, 9092, 9093, 8083]


def _held(port: int) -> bool:
    """Whether something listens on (or is bound to) 127.0.0.1:``port``."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@contextmanager
def held(ports: Sequence[int]) -> Iterator[list[int]]:
    """Every port in ``ports`` held for the block: by a listener of ours where it is free.

    Yields the ports this test holds itself (the others a running system holds already).
    """
    listeners: list[socket.socket] = []
    try:
        for port in ports:
            listener = socket.socket()
            try:
                listener.bind(("127.0.0.1", port))
            except OSError:  # a running system holds it: just what this test needs
                listener.close()
                continue
            listener.listen()
            listeners.append(listener)
        assert [p for p in ports if not _held(p)] == []
        yield [int(listener.getsockname()[1]) for listener in listeners]
    finally:
        for listener in listeners:
            listener.close()


def test_every_console_script_is_healthy_on_a_port_of_its_own_while_the_defaults_are_held(
    settings: Settings, spawn: Spawn
) -> None:
    ensure_topics(settings)  # the workers are healthy once their consumer has partitions
    with held(PROCESS_PORTS):
        processes = [spawn(command, settings) for command in LISTEN_PORT_FIELDS]
        for process in processes:
            assert process.port not in PROCESS_PORTS, process.command
            wait_http_ok(f"http://127.0.0.1:{process.port}/health", 60, process)

    assert len({process.port for process in processes}) == len(LISTEN_PORT_FIELDS)


def test_a_port_the_test_chose_is_the_one_the_process_listens_on(
    settings: Settings, spawn: Spawn
) -> None:
    chosen = settings.model_copy(update={"relay_metrics_port": free_port()})

    relay = spawn("outbox-relay", chosen)

    assert relay.port == chosen.relay_metrics_port
    wait_http_ok(f"http://127.0.0.1:{relay.port}/health", 60, relay)


@pytest.mark.timeout(300)
def test_the_suites_servers_start_on_ports_of_their_own_while_the_default_ones_are_held() -> None:
    # Not in pytest's tmp_path: as root, PostgreSQL runs as "postgres", which cannot enter
    # it. Kept between runs, so Kafka's jars are resolved once.
    suite_dir = ROOT / ".infra" / "beside-a-running-system"
    # A throwaway environ: the session's own servers stay what its tests use.
    before = dict(os.environ)
    environ = dict(before)
    backend = LocalBackend(
        env={**environ, "PREQUAL_TEST_INFRA_DIR": str(suite_dir)}, environ=environ
    )
    with held(SERVER_PORTS):
        overrides = backend.start()  # waits until both answer
        try:
            settings = Settings(**overrides)
            assert settings.pg_port not in SERVER_PORTS
            assert int(settings.kafka_bootstrap_servers.rsplit(":", 1)[1]) not in SERVER_PORTS
            assert int(settings.connect_url.rsplit(":", 1)[1]) not in SERVER_PORTS
            slot = Path(environ["PREQUAL_INFRA_DIR"])  # what the session's scripts act on
            assert slot.parent == suite_dir
            with psycopg.connect(settings.psycopg_conninfo, connect_timeout=5) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            kafka_check(settings)()
        finally:
            backend.stop()

    status = run_local_sh({**os.environ, "PREQUAL_INFRA_DIR": str(slot)}, "status")
    assert running_ports(status) == {}, status  # this session started them: it stopped them
    assert environ == before
