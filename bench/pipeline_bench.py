"""Full pipeline: submit → decision visible, at a sustained arrival rate, every process on.

The six processes run as ``make run`` runs them (polling relay), against a database of
their own. For each rate the open-loop generator (:mod:`bench.loadgen`, in its own
process) POSTs for ``seconds``; meanwhile the backlog — applications accepted but not
yet visible as decided in the query side — is sampled twice a second.

Per application, "decision visible" is ``application_status.updated_at`` (the
projector's transaction, stamped by the database) minus ``submitted_at`` (stamped by the
command API in the accepting transaction); both come from the same machine's clock.

A rate is *sustained* when every POST got a 202, the backlog did not grow over the
second half of the run (least-squares slope below 5 % of the arrival rate) and the
backlog drained within 10 s after the load stopped.

Usage: ``python -m bench.pipeline_bench [--rates 100,200,300] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import cpu
from bench.loadgen import LoadSpec, RateResult, percentile, run_rate_in_subprocess
from bench.relay_latency import ROOT
from bench.report import emit_json
from runtime.dev_issuer import issue_token
from runtime.settings import Settings
from schema.migrate import upgrade
from tests.support.infra import recreate_database
from tests.support.kafka import isolated_topics
from tests.support.pipeline import Pipeline, start_pipeline
from tests.support.processes import Process

DATABASE = "prequal_bench_pipeline"
DRAIN_LIMIT_S = 10.0


def _backlog(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM application_status WHERE status = 'PENDING'"
    ).fetchone()
    return int(row[0]) if row else 0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(t, value)`` points (0 for fewer than two)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def _visible_latencies_ms(conn: psycopg.Connection, since: Any) -> list[float]:
    rows = conn.execute(
        "SELECT extract(epoch FROM updated_at - submitted_at) * 1000"
        "  FROM application_status"
        " WHERE status <> 'PENDING' AND submitted_at >= %s",
        (since,),
    ).fetchall()
    return [float(r[0]) for r in rows]


def run_rate(pipeline: Pipeline, rate: float, seconds: float) -> dict[str, Any]:
    """Load the running pipeline at ``rate`` for ``seconds``; latency and backlog figures."""
    with psycopg.connect(pipeline.settings.psycopg_conninfo, autocommit=True) as conn:
        since = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        result: dict[str, Any] = {}

        def generate() -> None:
            token = issue_token(pipeline.settings, "bench", ["applications:write"])
            spec = LoadSpec(
                url=pipeline.command, rate=rate, seconds=seconds, seed=int(rate), token=token
            )
            try:
                result["load"] = run_rate_in_subprocess(spec)
            finally:
                done.set()

        started = time.perf_counter()
        cpu_before = cpu.snapshot()
        threading.Thread(target=generate, daemon=True).start()
        while not done.wait(0.5):
            samples.append((time.perf_counter() - started, float(_backlog(conn))))
        load_ended = time.perf_counter()
        cores = cpu.usage(cpu_before, load_ended - started)
        drained_after = None
        while time.perf_counter() - load_ended < DRAIN_LIMIT_S + 20:
            if _backlog(conn) == 0:
                drained_after = time.perf_counter() - load_ended
                break
            time.sleep(0.05)
        latencies = _visible_latencies_ms(conn, since)
    second_half = [p for p in samples if p[0] >= seconds / 2]
    growth = slope(second_half)
    load: RateResult = result["load"]
    sustained = (
        load.error_count == 0
        and growth < 0.05 * rate
        and drained_after is not None
        and drained_after <= DRAIN_LIMIT_S
    )
    return {
        "rate": rate,
        "seconds": seconds,
        "accepted": load.ok,
        "errors": load.errors,
        "post_p99_ms": load.p99_ms,
        "decided": len(latencies),
        "visible_p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "visible_p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
        "visible_p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        "visible_max_ms": round(max(latencies), 1) if latencies else None,
        "backlog_max": int(max((v for _, v in samples), default=0)),
        "backlog_growth_per_s": round(growth, 2),
        "drained_after_s": None if drained_after is None else round(drained_after, 2),
        "sustained": sustained,
        "cores_used": cores,
    }


def measure(admin: Settings, rates: list[float], seconds: float) -> dict[str, Any]:
    """Start the six processes once and run every rate against them, lowest first."""
    settings = isolated_topics(recreate_database(admin, DATABASE))
    # Capacity, not one client's fair share: the limit stays on, out of reach.
    settings = settings.model_copy(
        update={"rate_limit_per_s": 1e9, "rate_limit_burst": 1_000_000_000}
    )
    upgrade(settings.sqlalchemy_url)
    log_dir = ROOT / ".infra" / "logs" / "bench-pipeline"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[Process] = []

    def spawn(command: str, process_settings: Settings) -> Process:
        process = Process(command, process_settings, log_dir)
        processes.append(process)
        return process

    runs = []
    try:
        pipeline = start_pipeline(settings, spawn)
        # Warm-up, not recorded: connections, producers and group joins.
        run_rate(pipeline, min(rates), 2)
        for rate in sorted(rates):
            runs.append(run_rate(pipeline, rate, seconds))
            if not runs[-1]["sustained"]:
                break
    finally:
        for process in processes:
            process.terminate()
    passing = [r["rate"] for r in runs if r["sustained"]]
    return {"runs": runs, "sustained_rate": max(passing, default=None)}


def main() -> None:
    """Run the pipeline benchmark and print (and optionally save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,200,300,400")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results = measure(Settings(), rates, args.seconds)
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
