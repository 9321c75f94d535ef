"""Commit → readable-in-Kafka latency of both relays, at the same rate, in one run.

For each relay this inserts outbox rows one transaction at a time on an open-loop
schedule (each send at its planned time, whatever the previous one took), notes the
moment each COMMIT returned, and reads the topic with a ``read_committed`` consumer in
the same process, noting when each event became readable. Both clocks are this
process's, so the difference is the relay's latency as a client would see it.

Usage: ``python -m bench.relay_latency [--rate 200] [--seconds 15] [--out FILE.json]``.
Needs the local servers (``make infra-up``); starts and stops Kafka Connect itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from bench.report import emit_json
from messaging.headers import EVENT_ID, header_value
from outbox.append import OutboxMessage, append_sync
from runtime import db
from runtime.kafka import ensure_topics
from runtime.settings import RelayKind, Settings
from schema.migrate import upgrade
from tests.support.events import submitted_event
from tests.support.infra import recreate_database

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "prequal_bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarise(latencies_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of a list of latencies in milliseconds."""
    return {
        "count": len(latencies_ms),
        "p50_ms": round(_percentile(latencies_ms, 50), 2),
        "p95_ms": round(_percentile(latencies_ms, 95), 2),
        "p99_ms": round(_percentile(latencies_ms, 99), 2),
        "max_ms": round(max(latencies_ms), 2),
        "mean_ms": round(statistics.fmean(latencies_ms), 2),
    }


def _env(settings: Settings) -> dict[str, str]:
    # Settings replace their own variables; infra/local.sh's (infra dir, ports) stay.
    fields = settings.as_environment()
    base = {k: v for k, v in os.environ.items() if k not in fields}
    return {**base, **fields}


def _event(settings: Settings) -> OutboxMessage:
    return OutboxMessage(submitted_event(correlation_id="bench"), settings.topic_submitted)


def _fresh_database(admin: Settings) -> Settings:
    settings = recreate_database(admin, DATABASE)
    upgrade(settings.sqlalchemy_url)
    return settings


class _Reader(threading.Thread):
    """Reads a topic and notes when each event id became readable."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.ready = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"bench-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        self._consumer.subscribe([topic], on_assign=lambda *_: self.ready.set())

    def run(self) -> None:
        while not self.stop.is_set():
            message = self._consumer.poll(0.05)
            if message is None or message.error() is not None:
                continue
            event_id = header_value(message.headers(), EVENT_ID)
            if event_id and event_id not in self.seen:
                self.seen[event_id] = time.time()
        self._consumer.close()


def _drive(settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    """Insert rows at ``rate`` per second; return commit time by event id."""
    committed: dict[str, float] = {}
    total = int(rate * seconds)
    with db.connect(settings, "prequal-bench") as conn:
        start = time.perf_counter() + 0.5
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            message = _event(settings)
            with conn.transaction():
                append_sync(conn, message)
            committed[str(message.envelope.event_id)] = time.time()
    return committed


def measure(settings: Settings, relay: RelayKind, rate: float, seconds: float) -> dict[str, Any]:
    """Start ``relay``, drive load, and return its latency summary."""
    topic = f"bench_{relay.value}_{uuid.uuid4().hex[:8]}"
    settings = settings.model_copy(
        update={"topic_submitted": topic, "relay": relay, "debezium_slot": f"{DATABASE}_outbox"}
    )
    ensure_topics(settings, [topic, settings.topic_decisions])
    env = _env(settings)
    processes: list[subprocess.Popen[bytes]] = []
    logs = ROOT / ".infra" / "logs"
    logs.mkdir(parents=True, exist_ok=True)  # the servers may live in another infra dir
    log = open(logs / f"bench-{relay.value}.log", "wb")  # noqa: SIM115
    try:
        if relay is RelayKind.DEBEZIUM:
            # A worker left running on another database's connector config is not reused.
            local = str(ROOT / "infra/local.sh")
            subprocess.run([local, "down", "connect"], env=env, check=True)
            subprocess.run([local, "up", "connect"], env=env, check=True)
        processes.append(
            subprocess.Popen(
                ["outbox-relay"], env=env, stdout=log, stderr=log, start_new_session=True
            )
        )
        reader = _Reader(settings, topic)
        reader.start()
        reader.ready.wait(30)
        # Warm-up, not measured: the relay connects its producer, Connect its task.
        warm = _drive(settings, rate, 1.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(warm) <= set(reader.seen):
            time.sleep(0.1)
        committed = _drive(settings, rate, seconds)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(committed) <= set(reader.seen):
            time.sleep(0.1)
        reader.stop.set()
        reader.join(10)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        if relay is RelayKind.DEBEZIUM:
            subprocess.run([str(ROOT / "infra/local.sh"), "down", "connect"], env=env, check=True)
            subprocess.run([str(ROOT / "infra/local.sh"), "drop-slot"], env=env, check=True)
        log.close()
    latencies = [
        (reader.seen[event_id] - at) * 1000
        for event_id, at in committed.items()
        if event_id in reader.seen
    ]
    return {
        "relay": relay.value,
        "rate_per_s": rate,
        "seconds": seconds,
        "lost": len(committed) - len(latencies),
        **summarise(latencies),
    }


def main() -> None:
    """Measure both relays at the same rate and print (and optionally save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = _fresh_database(Settings())
    results = [
        measure(settings, relay, args.rate, args.seconds)
        for relay in (RelayKind.POLLING, RelayKind.DEBEZIUM)
    ]
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
