"""Relay throughput: how fast each relay drains a backlog of outbox rows into Kafka.

A backlog of ``--rows`` committed outbox rows (realistic submitted events, ~1 KB each)
is written with COPY; then the relay starts and the benchmark watches the topic's high
watermarks (what Kafka acknowledged) until every row is there.

* Polling: the rows are committed first; ``outbox-relay`` is started afterwards.
* Debezium: Kafka Connect is started with its connector (slot created, streaming), the
  rows are then committed in one transaction: the WAL holds the backlog.

Two figures per relay: events/s from the first event on the topic to the last (the
steady drain rate), and the time from start (relay launched / commit returned) to the
last event, which includes start-up.

Usage: ``python -m bench.relay_drain [--rows 50000] [--relays polling,debezium]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.relay_latency import ROOT, _env
from bench.repeats import spread
from bench.report import emit_json
from outbox.append import OUTBOX_COLUMNS, OutboxMessage
from runtime import db
from runtime.kafka import ensure_topics
from runtime.kafka import watermarks as partition_watermarks
from runtime.settings import RelayKind, Settings
from schema.migrate import upgrade
from tests.support.events import submitted_event
from tests.support.infra import recreate_database

DATABASE = "prequal_bench_relay"


# Seconds each exchange of the backlog's COPY may take (a chunk of rows, the commit).
BACKLOG_DEADLINE_S = 60.0


def write_backlog(settings: Settings, rows: int) -> None:
    """COPY ``rows`` submitted events into the outbox in one transaction."""
    template = submitted_event(correlation_id="bench-drain")
    statement = f"COPY outbox ({', '.join(OUTBOX_COLUMNS)}) FROM STDIN"
    with db.connect(settings, "prequal-bench", deadline_s=BACKLOG_DEADLINE_S) as conn:
        # One COPY streams the whole backlog, row by row as it is built: longer than the
        # services' statement timeout. Each exchange still ends by the deadline.
        conn.execute("SET statement_timeout = 0")
        conn.commit()
        with conn.transaction(), conn.cursor().copy(statement) as copy:
            for _ in range(rows):
                aggregate_id = uuid.uuid4()
                event = template.model_copy(
                    update={
                        "event_id": uuid.uuid4(),
                        "aggregate_id": aggregate_id,
                        "data": template.data.model_copy(update={"application_id": aggregate_id}),
                    }
                )
                row = OutboxMessage(event, settings.topic_submitted).row()
                row["payload"] = event.model_dump_json()
                copy.write_row([row[column] for column in OUTBOX_COLUMNS])


class Watermarks:
    """Sums a topic's high watermarks: how many messages Kafka has acknowledged."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"bench-watermarks-{uuid.uuid4()}",
            }
        )
        self._partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]

    def total(self) -> int:
        """Messages on the topic now (a new topic's leader election waited out)."""
        return sum(partition_watermarks(self._consumer, tp, 10)[1] for tp in self._partitions)

    def close(self) -> None:
        """Release the client."""
        self._consumer.close()


def _watch(watermarks: Watermarks, rows: int, started: float, timeout_s: float) -> dict[str, Any]:
    first = last = None
    seen = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = watermarks.total()
        now = time.perf_counter()
        if seen > 0 and first is None:
            first = now
        if seen >= rows:
            last = now
            break
        time.sleep(0.02)
    if first is None or last is None:
        return {"rows": rows, "delivered": seen, "complete": False}
    steady = max(last - first, 1e-6)
    return {
        "rows": rows,
        "delivered": seen,
        "complete": True,
        "events_per_s": round(rows / steady),
        "drain_s": round(steady, 2),
        "start_to_last_s": round(last - started, 2),
    }


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def drain_polling(settings: Settings, rows: int, timeout_s: float = 300) -> dict[str, Any]:
    """Commit the backlog, start ``outbox-relay``, time until Kafka has every row."""
    settings = _bench_topic(settings, "polling")
    write_backlog(settings, rows)
    watermarks = Watermarks(settings, settings.topic_submitted)
    started = time.perf_counter()
    relay = _start(["outbox-relay"], _env(settings), _log("drain-polling"))
    try:
        result = _watch(watermarks, rows, started, timeout_s)
    finally:
        _stop(relay)
        watermarks.close()
    return {"relay": "polling", "batch_size": settings.relay_batch_size, **result}


def drain_debezium(settings: Settings, rows: int, timeout_s: float = 300) -> dict[str, Any]:
    """Start Connect, commit the backlog in one transaction, time until Kafka has it."""
    settings = _bench_topic(settings, "debezium").model_copy(
        update={"relay": RelayKind.DEBEZIUM, "debezium_slot": f"{DATABASE}_outbox"}
    )
    env = _env(settings)
    local = str(ROOT / "infra/local.sh")
    watermarks = Watermarks(settings, settings.topic_submitted)
    try:
        # A worker left running (e.g. by `PREQUAL_RELAY=debezium make run`) reads another
        # database: infra/local.sh up would refuse to reuse it. The offsets of the bench's
        # own slot are checked against that slot when Connect starts.
        subprocess.run([local, "down", "connect"], env=env, check=True)
        subprocess.run([local, "up", "connect"], env=env, check=True)
        write_backlog(settings, rows)
        started = time.perf_counter()
        result = _watch(watermarks, rows, started, timeout_s)
    finally:
        watermarks.close()
        subprocess.run([local, "down", "connect"], env=env, check=True)
        subprocess.run([local, "drop-slot"], env=env, check=True)
    return {"relay": "debezium", **result}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per relay, the median and spread of events/s over its complete rounds.

    ``{relay: Spread dict | None}``; None when no round of that relay completed.
    """
    relays = sorted({run["relay"] for run in runs})
    rates = {
        relay: [float(r["events_per_s"]) for r in runs if r["relay"] == relay and r["complete"]]
        for relay in relays
    }
    return {relay: spread(found).to_dict() if found else None for relay, found in rates.items()}


def _bench_topic(settings: Settings, name: str) -> Settings:
    topic = f"bench_drain_{name}_{uuid.uuid4().hex[:8]}"
    settings = settings.model_copy(update={"topic_submitted": topic})
    with db.connect(settings, "prequal-bench", autocommit=True) as conn:
        conn.execute("TRUNCATE outbox, relay_handover")
    # Every routed topic must exist before Connect starts, or the connector stalls.
    ensure_topics(settings)
    return settings


def _log(name: str) -> Path:
    path = ROOT / ".infra" / "logs" / f"bench-{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    """Drain a backlog with each relay asked for and print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--relays", default="polling,debezium")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = recreate_database(Settings(), DATABASE)
    upgrade(settings.sqlalchemy_url)
    results = []
    for relay in args.relays.split(","):
        runner = drain_polling if relay == "polling" else drain_debezium
        results.append(runner(settings, args.rows))
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
