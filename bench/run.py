"""``make bench``: every figure of docs/benchmarks.md, measured side by side in one run.

Sections, in order (each on a fresh database of its own):

1. **Command API alone** (:mod:`bench.api_bench`) — open-loop sweeps of arrival rates
   against ``command-api`` (outbox) and the original design's inline-publish baseline,
   in interleaved rounds.
2. **PostgreSQL's ceiling** for the same transaction (pgbench, several client counts),
   so the API is quoted as a fraction of what the database allows.
3. **Full pipeline** (:mod:`bench.pipeline_bench`) — six processes, sustained rates in
   rounds, submit → decision visible and CPU milliseconds per decided application.
4. **Commit interval** — the credit worker's transaction interval (100 ms, Kafka
   Streams' exactly-once default, against 10 ms) at low and target rates.
5. **Relay throughput** — draining a backlog, polling and Debezium, in rounds.

Every figure that decides a target is taken in :data:`bench.repeats.ROUNDS` rounds and
quoted as its median and spread. Results: ``bench/results/bench.json``, a plot
``docs/bench-latency.png`` and, with ``--write-docs``, the generated section of
``docs/benchmarks.md``. ``--smoke`` runs every section briefly, one round (CI keeps the
harness working with it; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka

from bench import api_bench, pgbench_ceiling, pipeline_bench, relay_drain, report
from bench.relay_latency import ROOT
from bench.repeats import ROUNDS, interleaved
from runtime import db
from runtime.settings import Settings
from schema.migrate import upgrade
from tests.support.infra import recreate_database
from tests.support.processes import free_port

DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Plan:
    """How much of each section to run."""

    api_rates: list[float]
    api_seconds: float
    pgbench_clients: list[int]
    pgbench_seconds: float
    pipeline_rates: list[float]
    pipeline_seconds: float
    commit_interval_rates: list[float]
    drain_rows: int
    rounds: int


FULL = Plan(
    api_rates=[100, 250, 500, 750, 1000, 1250, 1500, 1750, 2000],
    api_seconds=10,
    pgbench_clients=[1, 2, 4, 8, 16, 32],
    pgbench_seconds=10,
    pipeline_rates=[100, 200, 300, 400, 500, 600],
    pipeline_seconds=20,
    commit_interval_rates=[100, 300],
    drain_rows=50_000,
    rounds=ROUNDS,
)
SMOKE = Plan(
    api_rates=[50],
    api_seconds=2,
    pgbench_clients=[2],
    pgbench_seconds=2,
    pipeline_rates=[50],
    pipeline_seconds=3,
    commit_interval_rates=[50],
    drain_rows=2_000,
    rounds=1,
)


# --- 1. the command API, outbox against baseline ---------------------------------------


def command_api(admin: Settings, plan: Plan) -> dict[str, Any]:
    """Sweep the outbox API and the inline-publish baseline over the same rates, in rounds."""
    return api_bench.measure(admin, plan.api_rates, plan.api_seconds, plan.rounds)


# --- 2. PostgreSQL's ceiling -------------------------------------------------------------


def database_ceiling(admin: Settings, plan: Plan) -> dict[str, Any]:
    """Run pgbench with the submit transaction, unthrottled, at several client counts."""
    settings = pgbench_ceiling.prepare_database(admin)
    found = pgbench_ceiling.ceiling(settings, plan.pgbench_clients, plan.pgbench_seconds)
    return found.to_dict()


# --- 3 and 4 ---------------------------------------------------------------------------


def pipeline(admin: Settings, plan: Plan) -> dict[str, Any]:
    """The six processes under sustained load, every rate in each round."""
    return pipeline_bench.measure(admin, plan.pipeline_rates, plan.pipeline_seconds, plan.rounds)


def commit_interval(admin: Settings, plan: Plan) -> dict[str, Any]:
    """The credit worker's commit interval: 100 ms (the default) against 10 ms."""
    return pipeline_bench.commit_interval_trade(
        admin, plan.commit_interval_rates, plan.pipeline_seconds, plan.rounds, [100, 10]
    )


def relays(admin: Settings, plan: Plan) -> dict[str, Any]:
    """Backlog drain rate of each relay, the relays taking turns round by round."""
    settings = recreate_database(admin, relay_drain.DATABASE)
    upgrade(settings.sqlalchemy_url)
    # The polling relay serves /metrics; a running system (make run) holds the default port.
    settings = settings.model_copy(update={"relay_metrics_port": free_port()})
    drains = {"polling": relay_drain.drain_polling, "debezium": relay_drain.drain_debezium}
    runs = [
        {"round": number, **drains[relay](settings, plan.drain_rows)}
        for number, relay in interleaved(plan.rounds, list(drains))
    ]
    return {"runs": runs, "summary": relay_drain.summary(runs)}


# --- the record --------------------------------------------------------------------------


def machine(settings: Settings) -> dict[str, Any]:
    """What the figures were measured on."""
    with db.connect(settings, "prequal-bench", autocommit=True) as conn:

        def show(name: str) -> str:
            row = conn.execute(f"SHOW {name}").fetchone()
            return str(row[0]) if row else "?"

        server = show("server_version")
        durability = {n: show(n) for n in ("fsync", "synchronous_commit", "wal_level")}
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {
        name: metadata.version(name)
        for name in ("fastapi", "uvicorn", "sqlalchemy", "psycopg", "confluent-kafka", "pydantic")
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": server,
        "postgresql_durability": durability,
        # PREQUAL_KAFKA_BROKERS=3 benchmarks the three-broker cluster (3 replicas, acks=all
        # waiting for 2 of them): the figures must say which.
        "kafka": (
            "4.3.1 (one KRaft node)"
            if settings.kafka_brokers == 1
            else "4.3.1 (three KRaft nodes, 3 replicas, min.insync.replicas 2)"
        ),
        "debezium": "3.6.3.Final on Kafka Connect 4.3.1 (standalone)",
        "librdkafka": confluent_kafka.libversion()[0],
        "packages": versions,
        "settings": {
            "command_api_workers (API section)": api_bench.WORKERS,
            "credit_worker_commit_interval_ms": settings.credit_worker_commit_interval_ms,
            "pg_pool_size": settings.pg_pool_size,
            "pg_pool_pre_ping": settings.pg_pool_pre_ping,
            "relay_batch_size": settings.relay_batch_size,
            "consumer_batch_size": settings.consumer_batch_size,
            "consumer_batch_linger_ms": settings.consumer_batch_linger_ms,
            "topic_partitions": settings.topic_partitions,
        },
    }


SECTIONS: dict[str, Callable[[Settings, Plan], Any]] = {
    "command_api": command_api,
    "postgres_ceiling": database_ceiling,
    "pipeline": pipeline,
    "commit_interval": commit_interval,
    "relay_drain": relays,
}


def run(plan: Plan, only: Sequence[str]) -> dict[str, Any]:
    """Run the chosen sections; each section's wall time is recorded too."""
    admin = Settings()
    record: dict[str, Any] = {"machine": machine(admin), "timings_s": {}}
    for name, section in SECTIONS.items():
        if only and name not in only:
            continue
        started = time.monotonic()
        print(f"bench: {name} …", file=sys.stderr, flush=True)
        record[name] = section(admin, plan)
        record["timings_s"][name] = round(time.monotonic() - started, 1)
    return record


def main() -> None:
    """Parse the arguments, run, and write JSON, the plot and (optionally) the docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every section, briefly")
    parser.add_argument("--only", default="", help="comma-separated sections")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/bench.json")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    record = run(SMOKE if args.smoke else FULL, [s for s in args.only.split(",") if s])
    record["smoke"] = args.smoke
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    if args.plot:
        report.plot(record, args.plot)
    text = report.markdown(record)
    print(text)
    if args.write_docs:
        report.write_docs(DOCS, text, BEGIN, END)
    failures = report.problems(record)
    for problem in failures:
        print(f"bench: {problem}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
