"""The command API alone: the outbox against the original design, in interleaved rounds.

Each round sweeps the same open-loop arrival rates (:func:`bench.loadgen.sweep`) first
against ``command-api`` (outbox: application + event in one commit), then against
``bench.baseline_api`` (commit, then publish inline with acks=all and wait for the
delivery report), each on a fresh server and empty tables. Rounds alternate the sides
(:func:`bench.repeats.interleaved`), so a slow spell of the machine is shared.

:func:`summary` reduces the rounds to each side's sustained rate (median and spread of
the rounds' own), the outbox/baseline ratio per round, and per rate the median latency
percentiles over the rounds that reached it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from statistics import median
from typing import Any

from bench import cpu, pgbench_ceiling
from bench.loadgen import LoadSpec, RateResult, SweepResult, run_rate_in_subprocess, sweep
from bench.relay_latency import ROOT, _env
from bench.repeats import interleaved, spread
from runtime.dev_issuer import issue_token
from runtime.kafka import ensure_topics
from runtime.settings import Settings
from schema.migrate import upgrade
from tests.support.infra import recreate_database
from tests.support.kafka import isolated_topics
from tests.support.processes import free_port, wait_until

DATABASE = "prequal_bench_api"
#: Two uvicorn workers: one Python process cannot use more than one of the two cores.
WORKERS = 2
#: The benchmark measures what the system can serve, not one client's fair share: the
#: rate limit (one statement per request, as in production) stays on, set out of reach.
UNLIMITED = {"rate_limit_per_s": 1e9, "rate_limit_burst": 1_000_000_000}
SIDES: dict[str, list[str]] = {
    "outbox": ["command-api"],
    "baseline_inline_publish": [sys.executable, "-m", "bench.baseline_api"],
}
PERCENTILES = ("p50_ms", "p95_ms", "p99_ms", "max_ms")


def measure(admin: Settings, rates: list[float], seconds: float, rounds: int) -> dict[str, Any]:
    """Sweep both sides over ``rates`` (``seconds`` each) in ``rounds`` interleaved rounds.

    Returns ``{"rounds": [{"round": n, side: sweep}], "summary": summary(...)}``; each
    sweep is :meth:`SweepResult.to_dict` plus ``cores_used_by_rate``.
    """
    found = sweep_rounds(admin, SIDES, rates, seconds, rounds)
    return {"rounds": found, "summary": summary(found)}


def sweep_rounds(
    admin: Settings, sides: dict[str, list[str]], rates: list[float], seconds: float, rounds: int
) -> list[dict[str, Any]]:
    """Sweep each side's server command over ``rates`` in ``rounds`` interleaved rounds.

    ``sides``: name → the command that serves the command API on ``PREQUAL_COMMAND_API_PORT``.
    Returns ``[{"round": n, side: sweep}]``, a sweep being :meth:`SweepResult.to_dict`
    plus ``cores_used_by_rate`` (cores by role, per rate).
    """
    settings = isolated_topics(recreate_database(admin, DATABASE))
    upgrade(settings.sqlalchemy_url)
    settings = settings.model_copy(
        update={"command_api_port": free_port(), "command_api_workers": WORKERS, **UNLIMITED}
    )
    token = issue_token(settings, "bench", ["applications:write"])
    ensure_topics(settings)  # the baseline publishes; the broker never auto-creates
    done: dict[int, dict[str, Any]] = {}
    for number, side in interleaved(rounds, list(sides)):
        print(f"bench: command_api round {number} {side} …", file=sys.stderr, flush=True)
        done.setdefault(number, {"round": number})[side] = _sweep(
            side, sides[side], settings, token, rates, seconds
        )
    return list(done.values())


def _sweep(
    side: str,
    command: list[str],
    settings: Settings,
    token: str,
    rates: list[float],
    seconds: float,
) -> dict[str, Any]:
    pgbench_ceiling.clear_tables(settings)
    process = _serve(command, settings, f"api-{side}")
    cores: dict[str, dict[str, float]] = {}

    def measured(spec: LoadSpec) -> RateResult:
        before, started = cpu.snapshot(), time.perf_counter()
        result = run_rate_in_subprocess(spec)
        cores[f"{float(spec.rate):g}"] = cpu.usage(before, time.perf_counter() - started)
        return result

    try:
        outcome: SweepResult = sweep(
            f"http://127.0.0.1:{settings.command_api_port}",
            rates,
            seconds,
            runner=measured,
            token=token,
        )
    finally:
        _stop(process)
    return {**outcome.to_dict(), "cores_used_by_rate": cores}


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread over the rounds (see the module).

    ``{"sustained_rate": {side: Spread dict}, "outbox_over_baseline": Spread dict | None,
    "by_rate": {rate: {side: {"rounds": n, "p50_ms": median, …, "errors": median}}}}``.
    A round with no sustained rate counts as 0 for its side; a rate a round's sweep did
    not reach (overloaded at a lower rate) is left out of that rate's medians.
    """
    sides = [side for side in SIDES if all(side in r for r in rounds)]
    sustained = {
        side: spread(float(r[side]["sustained_rate"] or 0.0) for r in rounds) for side in sides
    }
    base = "baseline_inline_publish"
    ratios = [
        float(r["outbox"]["sustained_rate"] or 0.0) / float(r[base]["sustained_rate"])
        for r in rounds
        if "outbox" in r and r.get(base, {}).get("sustained_rate")
    ]
    by_rate: dict[float, dict[str, Any]] = {}
    for side in sides:
        runs: dict[float, list[dict[str, Any]]] = {}
        for r in rounds:
            for run in r[side]["results"]:
                runs.setdefault(float(run["rate"]), []).append(run)
        for rate, found in runs.items():
            by_rate.setdefault(rate, {})[side] = {
                "rounds": len(found),
                **{key: round(median(run[key] for run in found), 1) for key in PERCENTILES},
                "errors": median(sum((run.get("errors") or {}).values()) for run in found),
            }
    return {
        "sustained_rate": {side: figure.to_dict() for side, figure in sustained.items()},
        "outbox_over_baseline": spread(ratios).to_dict() if ratios else None,
        "by_rate": dict(sorted(by_rate.items())),
    }


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
