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

CPU per decided application: the CPU seconds every process used from the start of the
load until the backlog drained (so all the work for those applications is in it), per
role, divided by the applications decided; the load generator reports its own. "system"
is the sum without the load generator.

The rates run in rounds (every rate once per round, lowest first, then again), and
:func:`summary` gives each rate's median and spread over its rounds.

Usage: ``python -m bench.pipeline_bench [--rates 100,200,300] [--seconds 20] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

import psycopg

from bench import cpu
from bench.loadgen import LoadSpec, RateResult, percentile, run_rate_in_subprocess
from bench.relay_latency import ROOT
from bench.repeats import interleaved, spread
from bench.report import emit_json
from runtime import db
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
    with db.connect(pipeline.settings, "prequal-bench", autocommit=True) as conn:
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
        drained_after = _wait_drained(conn, DRAIN_LIMIT_S + 20)
        cpu_seconds = cpu.seconds_used(cpu_before)
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
        "cpu_ms_per_application": cpu_ms_per_application(
            cpu_seconds, load.client_cpu_pct / 100 * seconds, len(latencies)
        ),
    }


def _wait_drained(conn: psycopg.Connection, limit_s: float) -> float | None:
    """Seconds until no application is pending, or None if some still are after ``limit_s``."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if _backlog(conn) == 0:
            return time.perf_counter() - started
        time.sleep(0.05)
    return None


def cpu_ms_per_application(
    used_s: dict[str, float], generator_s: float, decided: int
) -> dict[str, float]:
    """CPU milliseconds per decided application, by role; empty when nothing was decided.

    ``used_s``: CPU seconds by role; ``generator_s``: the load generator's own. Adds
    ``system`` (every role but the load generator) and ``load-generator``.
    """
    if decided == 0:
        return {}
    per_role = {role: 1000 * seconds / decided for role, seconds in used_s.items()}
    per_role = {role: round(ms, 3) for role, ms in per_role.items() if ms >= 0.0005}
    return {
        **per_role,
        "system": round(sum(per_role.values()), 3),
        "load-generator": round(1000 * generator_s / decided, 3),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per rate, over its rounds: median and spread of the figures that decide targets.

    ``{"by_rate": {rate: {"rounds", "sustained_rounds", "visible_p50_ms",
    "visible_p99_ms", "cpu_ms_per_application", "cpu_ms_by_role"}}, "sustained_rate"}``:
    latency and ``system`` CPU as Spread dicts, CPU by role as medians;
    ``sustained_rate`` is the Spread of each round's highest sustained rate (0 if none).
    """
    by_rate: dict[float, list[dict[str, Any]]] = {}
    highest: dict[int, float] = {}
    for run in runs:
        by_rate.setdefault(float(run["rate"]), []).append(run)
        best = highest.setdefault(run.get("round", 1), 0.0)
        if run["sustained"]:
            highest[run.get("round", 1)] = max(best, float(run["rate"]))
    rates: dict[float, dict[str, Any]] = {}
    for rate, rounds in sorted(by_rate.items()):
        costs = [r["cpu_ms_per_application"] for r in rounds if r["cpu_ms_per_application"]]
        roles = sorted({role for cost in costs for role in cost})
        rates[rate] = {
            "rounds": len(rounds),
            "sustained_rounds": sum(bool(r["sustained"]) for r in rounds),
            **{
                key: _spread_of(r[key] for r in rounds)
                for key in ("visible_p50_ms", "visible_p99_ms")
            },
            "cpu_ms_per_application": _spread_of(c["system"] for c in costs),
            "cpu_ms_by_role": {
                role: round(median(c.get(role, 0.0) for c in costs), 3) for role in roles
            },
        }
    return {
        "by_rate": rates,
        "sustained_rate": _spread_of(highest.values()),
    }


def _spread_of(values: Iterable[float | None]) -> dict[str, float] | None:
    found = [float(v) for v in values if v is not None]
    return spread(found).to_dict() if found else None


def measure(
    admin: Settings,
    rates: list[float],
    seconds: float,
    rounds: int = 1,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the six processes once; run every rate, lowest first, in ``rounds`` rounds.

    ``overrides`` are Settings fields the processes run with.
    Returns ``{"runs": [...], **summary(runs)}``.
    """
    runs = []
    with running_pipeline(admin, DATABASE, "bench-pipeline", overrides) as pipeline:
        # Warm-up, not recorded: connections, producers and group joins.
        run_rate(pipeline, min(rates), 2)
        for number in range(1, rounds + 1):
            for rate in sorted(rates):
                # An overloaded rate may leave a backlog; the next rate starts without one.
                with db.connect(pipeline.settings, "prequal-bench", autocommit=True) as conn:
                    _wait_drained(conn, 60)
                runs.append({"round": number, **run_rate(pipeline, rate, seconds)})
    return {"runs": runs, **summary(runs)}


@contextmanager
def running_pipeline(
    admin: Settings, database: str, log_name: str, overrides: dict[str, Any] | None = None
) -> Iterator[Pipeline]:
    """The six processes on a fresh, migrated ``database`` and topics of their own.

    The rate limit stays on, out of reach (capacity, not one client's fair share);
    ``overrides`` are further Settings fields. Logs go to ``.infra/logs/<log_name>``;
    every process is stopped on the way out.
    """
    settings = isolated_topics(recreate_database(admin, database))
    settings = settings.model_copy(
        update={"rate_limit_per_s": 1e9, "rate_limit_burst": 1_000_000_000, **(overrides or {})}
    )
    upgrade(settings.sqlalchemy_url)
    log_dir = ROOT / ".infra" / "logs" / log_name
    log_dir.mkdir(parents=True, exist_ok=True)
    processes: list[Process] = []

    def spawn(command: str, process_settings: Settings) -> Process:
        process = Process(command, process_settings, log_dir)
        processes.append(process)
        return process

    try:
        yield start_pipeline(settings, spawn)
    finally:
        for process in processes:
            process.terminate()


def commit_interval_trade(
    admin: Settings, rates: list[float], seconds: float, rounds: int, intervals: list[int]
) -> dict[str, Any]:
    """The credit worker's commit interval against latency and CPU, interleaved rounds.

    For each round, each interval in ``intervals`` (ms) gets a pipeline of its own and
    every rate. Returns ``{"runs": [...], "by_interval": {ms: summary(runs)}}``.
    """
    runs: list[dict[str, Any]] = []
    for number, interval in interleaved(rounds, [str(i) for i in intervals]):
        overrides = {"credit_worker_commit_interval_ms": int(interval)}
        measured = measure(admin, rates, seconds, 1, overrides)["runs"]
        runs += [{**run, "round": number, "interval_ms": int(interval)} for run in measured]
    return {
        "runs": runs,
        "by_interval": {
            interval: summary([r for r in runs if r["interval_ms"] == interval])
            for interval in intervals
        },
    }


def main() -> None:
    """Run the pipeline benchmark and print (and optionally save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,200,300,400")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results = measure(Settings(), rates, args.seconds, args.rounds)
    emit_json(results, args.out)


if __name__ == "__main__":
    main()
