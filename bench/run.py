"""``make bench``: every figure of docs/benchmarks.md, measured side by side in one run.

Sections, in order (each on a fresh database of its own):

1. **Command API alone** — an open-loop sweep of arrival rates against ``command-api``
   (outbox: application + event in one commit), then the same rates against the
   original design's baseline (``bench.baseline_api``: commit, then publish inline with
   acks=all and wait for the delivery report).
2. **PostgreSQL's ceiling** for the same transaction (pgbench, several client counts),
   so the API is quoted as a fraction of what the database allows.
3. **Full pipeline** — six processes, sustained rates, submit → decision visible.
4. **Relay throughput** — draining a backlog, polling and Debezium.

Results: ``bench/results/bench.json``, a plot ``docs/bench-latency.png`` and, with
``--write-docs``, the generated section of ``docs/benchmarks.md``. ``--smoke`` runs every
section briefly (CI keeps the harness working with it; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka
import psycopg

from bench import cpu, pgbench_ceiling, pipeline_bench, relay_drain, report
from bench.loadgen import LoadSpec, RateResult, SweepResult, run_rate_in_subprocess, sweep
from bench.relay_latency import ROOT, _env
from runtime.dev_issuer import issue_token
from runtime.kafka import ensure_topics
from runtime.settings import Settings
from schema.migrate import upgrade
from tests.support.infra import recreate_database
from tests.support.kafka import isolated_topics
from tests.support.processes import free_port, wait_until

DOCS = ROOT / "docs" / "benchmarks.md"
API_WORKERS = 2
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
    drain_rows: int


FULL = Plan(
    api_rates=[100, 250, 500, 750, 1000, 1250, 1500],
    api_seconds=10,
    pgbench_clients=[1, 2, 4, 8, 16, 32],
    pgbench_seconds=10,
    pipeline_rates=[100, 200, 300, 400, 500],
    pipeline_seconds=20,
    drain_rows=50_000,
)
SMOKE = Plan(
    api_rates=[50],
    api_seconds=2,
    pgbench_clients=[2],
    pgbench_seconds=2,
    pipeline_rates=[50],
    pipeline_seconds=3,
    drain_rows=2_000,
)


# --- 1. the command API, outbox against baseline ---------------------------------------


def _serve(command: list[str], settings: Settings, name: str) -> subprocess.Popen[bytes]:
    logs = ROOT / ".infra" / "logs"
    logs.mkdir(parents=True, exist_ok=True)  # the servers may live in another infra dir
    log = (logs / f"bench-{name}.log").open("ab")
    process = subprocess.Popen(
        command, env=_env(settings), stdout=log, stderr=log, start_new_session=True, cwd=ROOT
    )
    url = f"http://127.0.0.1:{settings.command_api_port}/health"

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until(healthy, 60)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        process.wait(30)


#: The benchmark measures what the system can serve, not one client's fair share: the
#: rate limit (one statement per request, as in production) stays on, set out of reach.
UNLIMITED = {"rate_limit_per_s": 1e9, "rate_limit_burst": 1_000_000_000}


def command_api(admin: Settings, plan: Plan) -> dict[str, Any]:
    """Sweep the outbox API and the inline-publish baseline over the same rates."""
    settings = isolated_topics(recreate_database(admin, "prequal_bench_api"))
    upgrade(settings.sqlalchemy_url)
    # Two uvicorn workers: one Python process cannot use more than one of the two cores.
    settings = settings.model_copy(
        update={
            "command_api_port": free_port(),
            "command_api_workers": API_WORKERS,
            **UNLIMITED,
        }
    )
    token = issue_token(settings, "bench", ["applications:write"])
    ensure_topics(settings)  # the baseline publishes; the broker never auto-creates
    modes: dict[str, list[str]] = {
        "outbox": ["command-api"],
        "baseline_inline_publish": [sys.executable, "-m", "bench.baseline_api"],
    }
    results: dict[str, Any] = {}
    for mode, command in modes.items():
        pgbench_ceiling.clear_tables(settings)
        process = _serve(command, settings, f"api-{mode}")
        cores: dict[str, dict[str, float]] = {}

        def measured(spec: LoadSpec, cores: dict[str, dict[str, float]] = cores) -> RateResult:
            before, started = cpu.snapshot(), time.perf_counter()
            result = run_rate_in_subprocess(spec)
            cores[f"{float(spec.rate):g}"] = cpu.usage(before, time.perf_counter() - started)
            return result

        try:
            outcome: SweepResult = sweep(
                f"http://127.0.0.1:{settings.command_api_port}",
                plan.api_rates,
                plan.api_seconds,
                runner=measured,
                token=token,
            )
        finally:
            _stop(process)
        results[mode] = {**outcome.to_dict(), "cores_used_by_rate": cores}
    return results


# --- 2. PostgreSQL's ceiling -------------------------------------------------------------


def database_ceiling(admin: Settings, plan: Plan) -> dict[str, Any]:
    """Run pgbench with the submit transaction, unthrottled, at several client counts."""
    settings = pgbench_ceiling.prepare_database(admin)
    found = pgbench_ceiling.ceiling(settings, plan.pgbench_clients, plan.pgbench_seconds)
    return found.to_dict()


# --- 3 and 4 ---------------------------------------------------------------------------


def pipeline(admin: Settings, plan: Plan) -> dict[str, Any]:
    """The six processes under sustained load."""
    return pipeline_bench.measure(admin, plan.pipeline_rates, plan.pipeline_seconds)


def relays(admin: Settings, plan: Plan) -> list[dict[str, Any]]:
    """Backlog drain rate of each relay."""
    settings = recreate_database(admin, relay_drain.DATABASE)
    upgrade(settings.sqlalchemy_url)
    # The polling relay serves /metrics; a running system (make run) holds the default port.
    settings = settings.model_copy(update={"relay_metrics_port": free_port()})
    return [
        relay_drain.drain_polling(settings, plan.drain_rows),
        relay_drain.drain_debezium(settings, plan.drain_rows),
    ]


# --- the record --------------------------------------------------------------------------


def machine(settings: Settings) -> dict[str, Any]:
    """What the figures were measured on."""
    with psycopg.connect(settings.psycopg_conninfo, autocommit=True) as conn:

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
            "command_api_workers (API section)": API_WORKERS,
            "pg_pool_size": settings.pg_pool_size,
            "pg_pool_pre_ping": settings.pg_pool_pre_ping,
            "relay_batch_size": settings.relay_batch_size,
            "consumer_batch_size": settings.consumer_batch_size,
            "topic_partitions": settings.topic_partitions,
        },
    }


SECTIONS: dict[str, Callable[[Settings, Plan], Any]] = {
    "command_api": command_api,
    "postgres_ceiling": database_ceiling,
    "pipeline": pipeline,
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
