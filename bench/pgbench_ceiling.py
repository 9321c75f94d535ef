"""What PostgreSQL itself allows for the command API's transaction, measured with pgbench.

``bench/pgbench/submit.sql`` is the submit transaction of ``command_api/submit.py``
(application row, outbox event with a ~600-byte JSONB payload, PENDING projection row,
and, with ``-D idempotency=1``, the advisory lock, key lookup and key row), against the
real tables, indexes and triggers of a database built by the migrations. Durable
settings only: the server's own ``fsync`` and ``synchronous_commit`` (both on), never
relaxed for a run.

Two measurements:

* the *ceiling*: unthrottled closed-loop runs at several client counts; the best tps is
  what the database allows for this transaction on this machine, the bound the API is
  quoted against;
* *rate-limited* runs (``-R``) at the same arrival rates as the API's load test, with as
  many clients as the API's connection pool: pgbench then measures latency from each
  transaction's scheduled start, like ``bench.loadgen``, so the two are comparable.

Percentiles come from pgbench's per-transaction log (``--log``), whose latency column is
measured from the scheduled start under ``-R``.

Usage: ``python -m bench.pgbench_ceiling [--clients 1,2,4,8,16] [--seconds 10]
[--rates 100,300,600] [--idempotency] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from bench.loadgen import percentile
from runtime import db
from runtime.settings import Settings
from schema.migrate import upgrade
from tests.support.infra import recreate_database

SCRIPT = Path(__file__).resolve().parent / "pgbench" / "submit.sql"
PGBENCH = "/usr/bin/pgbench"
# Not ``prequal_bench``: the relay benchmarks recreate that one, and may run meanwhile.
DATABASE = "prequal_bench_submit"
# The rows one submit writes; emptied after a run so runs do not grow the tables.
TABLES = ("applications", "outbox", "application_status", "idempotency_keys")

_SUMMARY_PATTERNS: dict[str, re.Pattern[str]] = {
    "clients": re.compile(r"^number of clients: (\d+)", re.M),
    "threads": re.compile(r"^number of threads: (\d+)", re.M),
    "transactions": re.compile(r"^number of transactions actually processed: (\d+)", re.M),
    "failed": re.compile(r"^number of failed transactions: (\d+)", re.M),
    "skipped": re.compile(r"^number of transactions skipped: (\d+)", re.M),
    "latency_avg_ms": re.compile(r"^latency average = ([\d.]+) ms", re.M),
    "latency_stddev_ms": re.compile(r"^latency stddev = ([\d.]+) ms", re.M),
    "lag_avg_ms": re.compile(r"^rate limit schedule lag: avg ([\d.]+) \(max [\d.]+\) ms", re.M),
    "lag_max_ms": re.compile(r"^rate limit schedule lag: avg [\d.]+ \(max ([\d.]+)\) ms", re.M),
    "tps": re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M),
}
_INTEGERS = {"clients", "threads", "transactions", "failed", "skipped"}


def parse_summary(text: str) -> dict[str, float | int]:
    """The figures of pgbench's closing summary (those present in ``text``).

    Keys: clients, threads, transactions, failed, skipped, latency_avg_ms,
    latency_stddev_ms, lag_avg_ms, lag_max_ms, tps. pgbench prints the stddev and the
    lag only with ``-P``/``-R``, so those may be missing. Raises if there is no tps line
    (pgbench failed).
    """
    figures: dict[str, float | int] = {}
    for key, pattern in _SUMMARY_PATTERNS.items():
        match = pattern.search(text)
        if match is not None:
            figures[key] = int(match.group(1)) if key in _INTEGERS else float(match.group(1))
    if "tps" not in figures:
        raise ValueError(f"no tps in pgbench output:\n{text}")
    return figures


def parse_transaction_log(lines: Iterable[str]) -> tuple[list[float], list[float], int]:
    """Latencies and schedule lags (ms) of a pgbench per-transaction log, and skips.

    A line is ``client_id transaction_no time script_no time_epoch time_us
    [schedule_lag]``; ``time`` is in microseconds, or ``skipped``/``failed``.
    Skipped and failed transactions are counted, not given a latency.
    """
    latencies: list[float] = []
    lags: list[float] = []
    unfinished = 0
    for line in lines:
        fields = line.split()
        if len(fields) < 6:
            continue
        if not fields[2].isdigit():
            unfinished += 1
            continue
        latencies.append(int(fields[2]) / 1000)
        if len(fields) >= 7:
            lags.append(int(fields[6]) / 1000)
    return latencies, lags, unfinished


@dataclass(frozen=True, slots=True)
class PgbenchRun:
    """One pgbench run: its parameters, pgbench's summary and the log's percentiles."""

    clients: int
    threads: int
    seconds: float
    rate: float | None
    idempotency: bool
    transactions: int
    failed: int
    skipped: int
    tps: float
    latency_avg_ms: float
    latency_stddev_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def build_run(
    summary: dict[str, float | int],
    log_lines: Iterable[str],
    *,
    seconds: float,
    rate: float | None,
    idempotency: bool,
) -> PgbenchRun:
    """Combine a parsed summary and a per-transaction log into a :class:`PgbenchRun`."""
    latencies, lags, _ = parse_transaction_log(log_lines)
    stddev: float | None = summary.get("latency_stddev_ms")
    if stddev is None and len(latencies) > 1:
        # pgbench prints the stddev only with -P or -R; the log has every latency.
        stddev = round(statistics.pstdev(latencies), 3)
    return PgbenchRun(
        clients=int(summary["clients"]),
        threads=int(summary["threads"]),
        seconds=seconds,
        rate=rate,
        idempotency=idempotency,
        transactions=int(summary["transactions"]),
        failed=int(summary.get("failed", 0)),
        skipped=int(summary.get("skipped", 0)),
        tps=round(float(summary["tps"]), 1),
        latency_avg_ms=float(summary["latency_avg_ms"]),
        latency_stddev_ms=stddev,
        p50_ms=_round(percentile(latencies, 50)) if latencies else None,
        p95_ms=_round(percentile(latencies, 95)) if latencies else None,
        p99_ms=_round(percentile(latencies, 99)) if latencies else None,
        max_ms=_round(max(latencies)) if latencies else None,
        lag_p99_ms=_round(percentile(lags, 99)) if lags else None,
        lag_max_ms=_round(max(lags)) if lags else None,
    )


def prepare_database(admin: Settings, name: str = DATABASE) -> Settings:
    """Drop and recreate database ``name``, migrate it; settings pointing at it."""
    settings = recreate_database(admin, name)
    upgrade(settings.sqlalchemy_url)
    return settings


def clear_tables(settings: Settings) -> None:
    """Empty the tables a submit writes."""
    with db.connect(settings, "prequal-bench", autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, TABLES))))


def run_pgbench(
    settings: Settings,
    clients: int,
    seconds: float,
    *,
    rate: float | None = None,
    idempotency: bool = False,
    threads: int | None = None,
    latency_limit_ms: float | None = None,
    pgbench: str = PGBENCH,
    script: Path = SCRIPT,
) -> PgbenchRun:
    """Run the submit transaction with pgbench once and return its figures.

    ``threads`` defaults to min(clients, 2): the machine has two cores. ``rate`` turns on
    pgbench's schedule (``-R``, Poisson arrivals); ``latency_limit_ms`` additionally
    skips transactions already that late (off by default: skipping lowers the load).
    """
    threads = threads or min(clients, 2)
    with tempfile.TemporaryDirectory(prefix="pgbench-") as tmp:
        prefix = Path(tmp) / "tx"
        command = [
            pgbench,
            "-n",
            "-M",
            "prepared",
            "-f",
            str(script),
            "-D",
            f"idempotency={int(idempotency)}",
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(max(1, round(seconds))),
            "--log",
            f"--log-prefix={prefix}",
            "-h",
            settings.pg_host,
            "-p",
            str(settings.pg_port),
            "-U",
            settings.pg_user,
        ]
        if rate is not None:
            command += ["-R", repr(rate)]
        if latency_limit_ms is not None:
            command += ["--latency-limit", repr(latency_limit_ms)]
        command.append(settings.pg_database)
        env = {**os.environ, "PGPASSWORD": settings.pg_password.get_secret_value()}
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=seconds + 120,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"pgbench failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
            )
        lines: list[str] = []
        for log in sorted(Path(tmp).glob("tx.*")):
            lines.extend(log.read_text().splitlines())
    return build_run(
        parse_summary(completed.stdout),
        lines,
        seconds=seconds,
        rate=rate,
        idempotency=idempotency,
    )


@dataclass(frozen=True, slots=True)
class Ceiling:
    """Unthrottled runs at several client counts; ``best`` is the one with most tps."""

    runs: list[PgbenchRun]
    idempotency: bool
    rate_limited: list[PgbenchRun] = field(default_factory=list)

    @property
    def best(self) -> PgbenchRun:
        """The run with the highest tps: the database's ceiling for this transaction."""
        return max(self.runs, key=lambda run: run.tps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        best = self.best
        return {
            "idempotency": self.idempotency,
            "ceiling_tps": best.tps,
            "ceiling_clients": best.clients,
            "ceiling_latency_avg_ms": best.latency_avg_ms,
            "ceiling_latency_stddev_ms": best.latency_stddev_ms,
            "runs": [run.to_dict() for run in self.runs],
            "rate_limited": [run.to_dict() for run in self.rate_limited],
        }


def ceiling(
    settings: Settings,
    client_counts: Sequence[int] = (1, 2, 4, 8, 16),
    seconds: float = 10.0,
    *,
    idempotency: bool = False,
    rates: Sequence[float] = (),
    rate_clients: int | None = None,
    latency_limit_ms: float | None = None,
) -> Ceiling:
    """Measure the database's ceiling (and, for ``rates``, scheduled latency).

    ``rate_clients`` defaults to the API's pool size (``settings.pg_pool_size``): at a
    given rate, pgbench then has as many connections as the API can use. The tables
    are emptied after every run so each run starts from the same (small) tables.
    """
    runs = []
    for clients in client_counts:
        runs.append(run_pgbench(settings, clients, seconds, idempotency=idempotency))
        clear_tables(settings)
    limited = []
    for rate in rates:
        limited.append(
            run_pgbench(
                settings,
                rate_clients or settings.pg_pool_size,
                seconds,
                rate=rate,
                idempotency=idempotency,
                latency_limit_ms=latency_limit_ms,
            )
        )
        clear_tables(settings)
    return Ceiling(runs, idempotency, limited)


def format_table(runs: Iterable[PgbenchRun]) -> str:
    """A plain-text table of pgbench runs, one line per run."""
    lines = [
        f"{'clients':>7} {'rate':>6} {'tps':>8} {'avg':>7} {'stddev':>7} {'p50':>7} "
        f"{'p95':>7} {'p99':>7} {'max':>7} {'failed':>6}"
    ]
    for r in runs:
        rate = f"{r.rate:.0f}" if r.rate is not None else "-"
        stddev = f"{r.latency_stddev_ms:.2f}" if r.latency_stddev_ms is not None else "-"
        lines.append(
            f"{r.clients:7d} {rate:>6} {r.tps:8.1f} {r.latency_avg_ms:7.2f} {stddev:>7} "
            f"{r.p50_ms or 0:7.2f} {r.p95_ms or 0:7.2f} {r.p99_ms or 0:7.2f} "
            f"{r.max_ms or 0:7.2f} {r.failed:6d}"
        )
    return "\n".join(lines)


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    """Recreate the bench database, measure, print JSON (and a table on stderr)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="", help="comma-separated -R rates, tx/s")
    parser.add_argument("--rate-clients", type=int, default=None)
    parser.add_argument("--idempotency", action="store_true")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = prepare_database(Settings(), args.database)
    result = ceiling(
        settings,
        [int(c) for c in _numbers(args.clients)],
        args.seconds,
        idempotency=args.idempotency,
        rates=_numbers(args.rates),
        rate_clients=args.rate_clients,
    )
    text = json.dumps(result.to_dict(), indent=2)
    print(text)
    print(format_table([*result.runs, *result.rate_limited]), file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
