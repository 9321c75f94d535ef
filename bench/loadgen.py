"""Open-loop HTTP load generator for ``POST /applications``, free of coordinated omission.

At a fixed arrival rate R for D seconds, request *i* is scheduled at ``start + i/R``
whatever happened to the requests before it. It is sent at that time (or as soon as the
generator can, if it fell behind) on a pooled keep-alive connection; when every
connection is busy the request waits for one. Its latency is measured from the
*scheduled* time to the end of the response, so a stalled server is charged for every
request that queued behind the stall, not only for the one that met it (the error a
closed-loop client makes, "coordinated omission").

Besides the latency percentiles, each run reports the generator's own *send lag*: how
late each request started compared with its schedule. A large send lag means the
generator (its event loop, its CPU share), not the server, limited the run.

The generator runs one asyncio event loop; to keep it off the interpreter (and CPU
time) of the orchestrator, run it in its own process with :func:`run_rate_in_subprocess`
or ``python -m bench.loadgen``, which prints JSON on stdout.

Usage: ``python -m bench.loadgen --url http://127.0.0.1:8000 --rates 100,300,600
[--seconds 5] [--warmup 1] [--connections 256] [--idempotency]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
OK_STATUS = 202
PATH = "/applications"

# Deterministic body generation: request i of a run gets PAN number _pan_index(i), a
# bijection on [0, _PAN_SPACE) so PANs are distinct for ~10^10 requests. The fourth
# letter is always "P" (the holder-type letter of an individual's PAN), which also keeps
# the two PANs with fixed CIBIL scores in the business rules (ABCDE1234F, FGHIJ5678K)
# out of generated traffic.
_PAN_SPACE = 26**5 * 10**4
# Coprime with _PAN_SPACE (= 2^9 · 5^4 · 13^5), so i ↦ i·A + offset is a permutation.
_PAN_MULTIPLIER = 1_000_000_007
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FIRST_NAMES = (
    "Aarav",
    "Vivaan",
    "Aditya",
    "Ananya",
    "Diya",
    "Ishaan",
    "Kavya",
    "Meera",
    "Rohan",
    "Saanvi",
    "Arjun",
    "Priya",
    "Rajesh",
    "Lakshmi",
    "Farhan",
    "Gurpreet",
)
_LAST_NAMES = (
    "Sharma",
    "Iyer",
    "Patel",
    "Reddy",
    "Nair",
    "Gupta",
    "Singh",
    "Khan",
    "Das",
    "Mukherjee",
    "Kulkarni",
    "Menon",
    "Chatterjee",
    "Verma",
)
# (loan type, smallest and largest amount in rupees): a home loan is larger than a car's.
_LOANS = (
    ("PERSONAL", 50_000, 2_500_000),
    ("HOME", 1_000_000, 15_000_000),
    ("AUTO", 200_000, 3_000_000),
)


def _mix(value: int) -> int:
    """SplitMix64 finaliser: a cheap, stable (unsalted) 64-bit hash of ``value``."""
    z = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def pan_for(index: int, seed: int = 0) -> str:
    """A valid PAN (``^[A-Z]{5}[0-9]{4}[A-Z]$``), distinct for distinct ``index`` in a seed."""
    n = (index * _PAN_MULTIPLIER + _mix(seed)) % _PAN_SPACE
    n, digits = divmod(n, 10_000)
    letters = []
    for _ in range(5):
        n, letter = divmod(n, 26)
        letters.append(_LETTERS[letter])
    return f"{''.join(letters[:3])}P{letters[3]}{digits:04d}{letters[4]}"


def body_for(index: int, seed: int = 0) -> bytes:
    """The JSON body of request ``index``: a valid application, deterministic per index.

    Amounts are JSON numbers with two decimals, as in the API contract's example.
    """
    h = _mix(index ^ (seed << 40))
    first = _FIRST_NAMES[h % len(_FIRST_NAMES)]
    last = _LAST_NAMES[(h >> 8) % len(_LAST_NAMES)]
    loan_type, low, high = _LOANS[(h >> 16) % len(_LOANS)]
    # Monthly income 15,000.00 .. 400,000.00 INR, to the paisa.
    income_paise = 1_500_000 + (h >> 20) % 38_500_001
    # Loan amounts are round thousands, as people ask for them.
    amount = (low + ((h >> 48) * 1_000) % (high - low)) // 1_000 * 1_000
    name = json.dumps(f"{first} {last}")
    return (
        f'{{"pan_number": "{pan_for(index, seed)}", "applicant_name": {name}, '
        f'"monthly_income_inr": {income_paise // 100}.{income_paise % 100:02d}, '
        f'"loan_amount_inr": {amount}.00, "loan_type": "{loan_type}"}}'
    ).encode()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` by the nearest-rank method.

    The smallest value such that at least ``q`` % of the values are at or below it:
    p99 of 1..100 is 99, p100 is the maximum. Never interpolates, so every reported
    percentile is a latency some request really had.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One open-loop run: ``rate`` requests per second for ``seconds``, after a warm-up."""

    url: str
    rate: float
    seconds: float
    warmup_s: float = 0.0
    connections: int = 256
    idempotency: bool = False
    timeout_s: float = 10.0
    seed: int = 0
    #: A bearer token sent with every request (the APIs refuse requests without one).
    token: str | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.seconds <= 0 or self.warmup_s < 0 or self.connections < 1:
            raise ValueError(f"invalid load spec: {self}")

    @property
    def endpoint(self) -> str:
        """The absolute URL requests are POSTed to."""
        return self.url.rstrip("/") + PATH


@dataclass(frozen=True, slots=True)
class Sample:
    """What happened to one request; times in milliseconds from its scheduled send."""

    scheduled_s: float
    send_lag_ms: float
    latency_ms: float
    outcome: str


@dataclass(frozen=True, slots=True)
class RateResult:
    """The summary of one run at one arrival rate (warm-up requests excluded)."""

    rate: float
    seconds: float
    requests: int
    ok: int
    errors: dict[str, int]
    send_rate: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    send_lag_p99_ms: float
    send_lag_max_ms: float
    connections: int = 0
    idempotency: bool = False
    client_cpu_pct: float = 0.0

    @property
    def error_count(self) -> int:
        """Requests that did not end in 202 (other statuses and exceptions)."""
        return sum(self.errors.values())

    @property
    def error_fraction(self) -> float:
        """The share of requests that did not end in 202."""
        return self.error_count / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateResult:
        """Rebuild a result from :meth:`to_dict`'s output (e.g. a subprocess's JSON)."""
        return cls(**data)


def summarise_samples(
    rate: float, seconds: float, samples: Sequence[Sample], **extra: Any
) -> RateResult:
    """Reduce the measured (non-warm-up) samples of one run to a :class:`RateResult`."""
    if not samples:
        raise ValueError("no samples to summarise")
    latencies = [s.latency_ms for s in samples]
    lags = [s.send_lag_ms for s in samples]
    outcomes = Counter(s.outcome for s in samples)
    ok = outcomes.pop(str(OK_STATUS), 0)
    sends = sorted(s.scheduled_s + s.send_lag_ms / 1000 for s in samples)
    completions = [s.scheduled_s + s.latency_ms / 1000 for s in samples]
    send_span = sends[-1] - sends[0]
    first_scheduled = min(s.scheduled_s for s in samples)
    # One interval is added to each span: n requests at rate R occupy n/R seconds.
    interval = 1 / rate
    return RateResult(
        rate=rate,
        seconds=seconds,
        requests=len(samples),
        ok=ok,
        errors=dict(sorted(outcomes.items())),
        send_rate=round(len(samples) / (send_span + interval), 2),
        throughput=round(ok / (max(completions) - first_scheduled + interval), 2),
        p50_ms=round(percentile(latencies, 50), 2),
        p95_ms=round(percentile(latencies, 95), 2),
        p99_ms=round(percentile(latencies, 99), 2),
        max_ms=round(max(latencies), 2),
        mean_ms=round(statistics.fmean(latencies), 2),
        send_lag_p99_ms=round(percentile(lags, 99), 2),
        send_lag_max_ms=round(max(lags), 2),
        **extra,
    )


async def collect(spec: LoadSpec) -> list[Sample]:
    """Run ``spec`` in the running event loop; every request's sample, warm-up included.

    Bodies (and keys) are built before the clock starts so the schedule loop does as
    little as possible. Warm-up requests are the first ``warmup_s × rate`` of the same
    schedule (no gap before the measured part); their ``scheduled_s`` is negative.
    """
    warmup = round(spec.warmup_s * spec.rate)
    total = warmup + round(spec.seconds * spec.rate)
    bodies = [body_for(i, spec.seed) for i in range(total)]
    run = uuid.uuid4().hex[:12]
    plain = {"Content-Type": "application/json"}
    if spec.token:
        plain["Authorization"] = f"Bearer {spec.token}"
    headers = [
        {**plain, "Idempotency-Key": f"bench-{run}-{i}"} if spec.idempotency else plain
        for i in range(total)
    ]
    samples: list[Sample | None] = [None] * total
    connector = aiohttp.TCPConnector(limit=spec.connections, limit_per_host=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    clock = time.perf_counter
    endpoint = spec.endpoint

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, scheduled: float, origin: float) -> None:
            # The task's first instruction: anything between schedule and here is the
            # generator's own delay (a busy loop), reported as send lag.
            lag = clock() - scheduled
            try:
                async with session.post(endpoint, data=bodies[i], headers=headers[i]) as resp:
                    await resp.read()
                    outcome = str(resp.status)
            except Exception as error:  # every failure (refused, reset, timeout) is an outcome
                outcome = type(error).__name__
            samples[i] = Sample(
                scheduled_s=scheduled - origin,
                send_lag_ms=lag * 1000,
                latency_ms=(clock() - scheduled) * 1000,
                outcome=outcome,
            )

        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        interval = 1 / spec.rate
        start = clock() + 0.01
        origin = start + warmup * interval  # the measured part starts here
        i = 0
        while i < total:
            now = clock()
            # Dispatch everything that is due; above ~1000/s the loop's timer resolution
            # (1 ms) makes that several requests per wake-up, each with its own schedule.
            while i < total and start + i * interval <= now:
                tasks.append(loop.create_task(one(i, start + i * interval, origin)))
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, start + i * interval - clock()))
        await asyncio.gather(*tasks)
    return [s for s in samples if s is not None]


async def run_rate(spec: LoadSpec) -> RateResult:
    """Run ``spec`` in the running loop and summarise the measured part."""
    cpu = time.process_time()
    wall = time.perf_counter()
    samples = await collect(spec)
    cpu_pct = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
    measured = [s for s in samples if s.scheduled_s >= 0]
    return summarise_samples(
        spec.rate,
        spec.seconds,
        measured,
        connections=spec.connections,
        idempotency=spec.idempotency,
        client_cpu_pct=round(cpu_pct, 1),
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop (installed with uvicorn[standard]) halves the generator's CPU per request,
    # which matters on a machine where it shares two cores with the server and database.
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return uvloop.new_event_loop


def run_rate_blocking(spec: LoadSpec) -> RateResult:
    """Run ``spec`` on a fresh event loop in this process (blocks until done)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(run_rate(spec))


def _spec_args(spec: LoadSpec) -> list[str]:
    args = [
        "--url",
        spec.url,
        "--rates",
        repr(spec.rate),
        "--seconds",
        repr(spec.seconds),
        "--warmup",
        repr(spec.warmup_s),
        "--connections",
        str(spec.connections),
        "--timeout",
        repr(spec.timeout_s),
        "--seed",
        str(spec.seed),
    ]
    if spec.token:
        args += ["--token", spec.token]
    return [*args, "--idempotency"] if spec.idempotency else args


def run_rate_in_subprocess(spec: LoadSpec, python: str = sys.executable) -> RateResult:
    """Run ``spec`` in a new ``python -m bench.loadgen`` process and return its result.

    The generator then has an interpreter (GIL) and event loop of its own: it neither
    slows the caller nor is slowed by it.
    """
    budget = spec.warmup_s + spec.seconds + spec.timeout_s + 60
    completed = subprocess.run(
        [python, "-m", "bench.loadgen", *_spec_args(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=budget,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed ({completed.returncode}):\n{completed.stderr}")
    document = json.loads(completed.stdout)
    return RateResult.from_dict(document["results"][0])


def sustained_rate(results: Iterable[RateResult], p99_limit_ms: float = 50.0) -> float | None:
    """The highest rate served with p99 ≤ ``p99_limit_ms`` and no error at all."""
    passing = [r.rate for r in results if r.p99_ms <= p99_limit_ms and r.error_count == 0]
    return max(passing, default=None)


def should_stop(
    result: RateResult,
    p99_limit_ms: float = 50.0,
    stop_factor: float = 4.0,
    max_error_fraction: float = 0.01,
) -> bool:
    """Whether a sweep should try no higher rate after ``result``.

    Past saturation latency only grows (the queue grows for the whole run), so a rate
    whose p99 is ``stop_factor`` × the limit, or that fails more than
    ``max_error_fraction`` of its requests, ends the sweep: higher rates would only
    overload the shared machine for minutes to say the same thing.
    """
    return result.p99_ms > p99_limit_ms * stop_factor or result.error_fraction > max_error_fraction


@dataclass(frozen=True, slots=True)
class SweepResult:
    """The runs of a sweep (ascending rates, possibly stopped early) and its verdict."""

    results: list[RateResult]
    sustained: float | None
    p99_limit_ms: float
    stopped_early: bool = False
    skipped_rates: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "results": [r.to_dict() for r in self.results],
            "sustained_rate": self.sustained,
            "p99_limit_ms": self.p99_limit_ms,
            "stopped_early": self.stopped_early,
            "skipped_rates": self.skipped_rates,
        }


def sweep(
    url: str,
    rates: Iterable[float],
    seconds: float,
    *,
    warmup_s: float = 1.0,
    connections: int = 256,
    idempotency: bool = False,
    timeout_s: float = 10.0,
    p99_limit_ms: float = 50.0,
    stop_factor: float = 4.0,
    max_error_fraction: float = 0.01,
    pause_s: float = 1.0,
    isolate: bool = True,
    runner: Callable[[LoadSpec], RateResult] | None = None,
    token: str | None = None,
) -> SweepResult:
    """Run ``rates`` in ascending order, ``seconds`` each; stop after the first overload.

    Each rate runs in its own generator process when ``isolate`` (the default), else on
    a fresh event loop in this process; ``runner`` replaces both (tests). Between rates
    the server gets ``pause_s`` to settle. The verdict is :func:`sustained_rate`.
    """
    run = runner or (run_rate_in_subprocess if isolate else run_rate_blocking)
    ordered = sorted(set(rates))
    results: list[RateResult] = []
    for position, rate in enumerate(ordered):
        if results and pause_s > 0:
            time.sleep(pause_s)
        spec = LoadSpec(
            url=url,
            rate=rate,
            seconds=seconds,
            warmup_s=warmup_s,
            connections=connections,
            idempotency=idempotency,
            timeout_s=timeout_s,
            seed=position + 1,  # fresh PANs for every rate
            token=token,
        )
        result = run(spec)
        results.append(result)
        if should_stop(result, p99_limit_ms, stop_factor, max_error_fraction):
            return SweepResult(
                results,
                sustained_rate(results, p99_limit_ms),
                p99_limit_ms,
                stopped_early=position < len(ordered) - 1,
                skipped_rates=ordered[position + 1 :],
            )
    return SweepResult(results, sustained_rate(results, p99_limit_ms), p99_limit_ms)


def format_table(results: Iterable[RateResult]) -> str:
    """A plain-text table of results, one line per rate, for a terminal or a report."""
    header = (
        f"{'rate/s':>8} {'sent/s':>8} {'ok':>7} {'errors':>7} {'p50':>8} {'p95':>8} "
        f"{'p99':>8} {'max':>8} {'lag p99':>8} {'lag max':>8} {'cli cpu':>8}"
    )
    lines = [header]
    for r in results:
        lines.append(
            f"{r.rate:8.0f} {r.send_rate:8.1f} {r.ok:7d} {r.error_count:7d} {r.p50_ms:8.2f} "
            f"{r.p95_ms:8.2f} {r.p99_ms:8.2f} {r.max_ms:8.2f} {r.send_lag_p99_ms:8.2f} "
            f"{r.send_lag_max_ms:8.2f} {r.client_cpu_pct:7.1f}%"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run a sweep in this process and print it as JSON on stdout (a table on stderr)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rates", default="100,300,600", help="comma-separated req/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idempotency", action="store_true")
    parser.add_argument("--token", default=None, help="bearer token sent with every request")
    parser.add_argument("--p99-limit-ms", type=float, default=50.0)
    parser.add_argument("--stop-factor", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    def in_process(spec: LoadSpec) -> RateResult:
        # A single rate keeps the caller's seed (run_rate_in_subprocess passes it on).
        return run_rate_blocking(replace(spec, seed=args.seed) if len(rates) == 1 else spec)

    result = sweep(
        args.url,
        rates,
        args.seconds,
        warmup_s=args.warmup,
        connections=args.connections,
        idempotency=args.idempotency,
        timeout_s=args.timeout,
        p99_limit_ms=args.p99_limit_ms,
        stop_factor=args.stop_factor,
        runner=in_process,
        token=args.token,
    )
    text = json.dumps(result.to_dict(), indent=2)
    print(text)
    print(format_table(result.results), file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
