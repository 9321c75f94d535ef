"""A three-broker KRaft cluster of the tests' own (infra/local.sh, PREQUAL_KAFKA_BROKERS=3).

:class:`KafkaCluster` starts PostgreSQL and the cluster in an infra dir of its own on free
ports, finds who leads what (a partition's leader, a consumer group's coordinator, a
transactional id's coordinator), kills and restarts nodes, waits for every replica to
be back in sync and reads the brokers' resident memory. Every process it signals is
checked first to be a broker started from its own infra dir.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from tests.support.infra import LOCAL_SH
from tests.support.processes import free_ports, wait_until

ROOT = Path(__file__).resolve().parents[2]
NODES = (1, 2, 3)
#: Partitions of ``__transaction_state`` and ``__consumer_offsets`` (the broker defaults,
#: transaction.state.log.num.partitions and offsets.topic.num.partitions).
COORDINATOR_PARTITIONS = 50


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode()`` of ``text``: a signed 32-bit int over UTF-16 code units."""
    value = 0
    encoded = text.encode("utf-16-be")
    for i in range(0, len(encoded), 2):
        value = (31 * value + int.from_bytes(encoded[i : i + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def coordinator_partition(key: str) -> int:
    """The partition whose leader coordinates ``key``: a transactional id or a group id.

    Kafka's ``Utils.abs(key.hashCode()) % partitions``, where ``Utils.abs`` maps
    Integer.MIN_VALUE to 0, of ``__transaction_state`` (TransactionStateManager.partitionFor)
    or ``__consumer_offsets`` (the group coordinator's partitionFor).
    """
    hashed = java_string_hash(key)
    return (0 if hashed == -(1 << 31) else abs(hashed)) % COORDINATOR_PARTITIONS


@dataclass
class KafkaCluster:
    """PostgreSQL and three Kafka nodes (broker and controller each) run by infra/local.sh."""

    infra_dir: Path
    pg_port: int = 0
    ports: tuple[int, int, int] = (0, 0, 0)
    controller_ports: tuple[int, int, int] = (0, 0, 0)
    env: dict[str, str] = field(default_factory=dict)
    _admin: AdminClient | None = field(default=None, repr=False)

    @classmethod
    def on_free_ports(cls, infra_dir: Path) -> KafkaCluster:
        """A cluster description on free ports (nothing started yet)."""
        pg, b1, b2, b3, c1, c2, c3, connect = free_ports(8)
        cluster = cls(infra_dir, pg, (b1, b2, b3), (c1, c2, c3))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREQUAL_")}
        env.update(
            PREQUAL_INFRA_DIR=str(infra_dir),
            PREQUAL_KAFKA_BROKERS="3",
            PREQUAL_PG_PORT=str(pg),
            PREQUAL_KAFKA_PORTS=",".join(map(str, cluster.ports)),
            PREQUAL_KAFKA_CONTROLLER_PORTS=",".join(map(str, cluster.controller_ports)),
            PREQUAL_CONNECT_PORT=str(connect),
        )
        cluster.env = env
        return cluster

    @property
    def bootstrap_servers(self) -> str:
        """All three brokers, as clients are given them."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def local(self, *args: str, timeout: float = 300) -> str:
        """``infra/local.sh ARGS`` on this cluster's infra dir; its output, or RuntimeError."""
        result = subprocess.run(
            [str(LOCAL_SH), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"infra/local.sh {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def admin(self) -> AdminClient:
        """An admin client bootstrapped from all three brokers, made once.

        Its librdkafka log goes to Python logging: a killed broker's refused connections
        would otherwise be printed on the test's stdout, between the drill's figures.
        """
        if self._admin is None:
            config: dict[str, Any] = {
                "bootstrap.servers": self.bootstrap_servers,
                "logger": logging.getLogger("tests.cluster.admin"),
            }
            self._admin = AdminClient(config)
        return self._admin

    def pid(self, node: int) -> int | None:
        """Node ``node``'s JVM pid, or None when it does not run.

        Checked against its command line (kafka.Kafka with this infra dir's node config),
        so that a stale pid file can never make a test signal another process.
        """
        try:
            pid = int((self.infra_dir / "run" / f"kafka-{node}.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            return None
        config = str(self.infra_dir / "kafka" / "cluster" / f"node-{node}.properties")
        return pid if "kafka.Kafka" in cmdline and config in cmdline else None

    def kill(self, node: int) -> None:
        """SIGKILL node ``node`` (its whole process group) and wait until it is gone."""
        pid = self.pid(node)
        assert pid is not None, f"kafka-{node} does not run"
        os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 10, lambda: f"kafka-{node} (pid {pid}) still alive")

    def rss_mib(self) -> dict[int, float]:
        """Each running node's resident set size, in MiB (VmRSS of /proc/PID/status)."""
        sizes: dict[int, float] = {}
        for node in NODES:
            pid = self.pid(node)
            if pid is None:
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes[node] = int(line.split()[1]) / 1024
        return sizes

    def partition_leader(self, topic: str, partition: int = 0) -> int:
        """The node id leading ``topic``'s ``partition`` (-1: none right now)."""
        metadata = self.admin().list_topics(topic, timeout=10)
        return int(metadata.topics[topic].partitions[partition].leader)

    def group_coordinator(self, group: str, timeout_s: float = 30) -> int:
        """The node id coordinating consumer group ``group``."""
        (future,) = (
            self.admin().describe_consumer_groups([group], request_timeout=timeout_s).values()
        )
        return int(future.result(timeout=timeout_s).coordinator.id)

    def transaction_coordinator(self, transactional_id: str) -> int:
        """The node id coordinating ``transactional_id``: its __transaction_state leader."""
        return self.partition_leader("__transaction_state", coordinator_partition(transactional_id))

    def group_coordinator_by_metadata(self, group: str) -> int:
        """The node id coordinating ``group`` as its __consumer_offsets leader.

        Metadata answers while a coordinator lookup may still be sent to a broker that is
        gone (and wait out its request timeout): what a failover is timed with.
        """
        return self.partition_leader("__consumer_offsets", coordinator_partition(group))

    def described_transaction_coordinator(self, transactional_id: str) -> int:
        """The coordinator as Kafka's own tool reports it (TransactionsCommand describe)."""
        libs = self.infra_dir / "kafka" / "libs"
        result = subprocess.run(
            [
                "java",
                "-Xmx128m",
                "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={ROOT / 'infra' / 'kafka' / 'log4j2.properties'}",
                "-Dprequal.log.level=WARN",
                "-cp",
                f"{libs}/*",
                "org.apache.kafka.tools.TransactionsCommand",
                "--bootstrap-server",
                self.bootstrap_servers,
                "describe",
                "--transactional-id",
                transactional_id,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        header, row = result.stdout.strip().splitlines()[:2]
        return int(dict(zip(header.split(), row.split(), strict=False))["CoordinatorId"])

    def under_replicated(self) -> list[str]:
        """Every partition (internal topics too) whose in-sync replicas are not all replicas."""
        metadata = self.admin().list_topics(timeout=10)
        return [
            f"{name}-{partition.id} isr={partition.isrs} replicas={partition.replicas}"
            for name, topic in metadata.topics.items()
            for partition in topic.partitions.values()
            if sorted(partition.isrs) != sorted(partition.replicas) or partition.leader < 0
        ]

    def wait_in_sync(self, timeout_s: float = 120) -> float:
        """Wait until all three brokers are listed and every replica is in sync; seconds taken."""
        started = time.monotonic()

        def whole() -> bool:
            try:
                brokers = self.admin().list_topics(timeout=5).brokers
                return len(brokers) == len(NODES) and not self.under_replicated()
            except Exception:  # a broker mid-restart may fail the request
                return False

        wait_until(whole, timeout_s, lambda: "\n".join(self.under_replicated()), interval_s=0.5)
        return time.monotonic() - started


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1][0] != "Z"
