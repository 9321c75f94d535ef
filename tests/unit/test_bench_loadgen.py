"""The load generator's statistics, schedule, bodies and verdicts; pgbench output parsing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from bench.loadgen import (
    LoadSpec,
    RateResult,
    Sample,
    body_for,
    collect,
    pan_for,
    percentile,
    run_rate,
    should_stop,
    summarise_samples,
    sustained_rate,
    sweep,
)
from bench.pgbench_ceiling import build_run, parse_summary, parse_transaction_log
from command_api.models import ApplicationRequest
from tests.support.processes import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    """A tiny HTTP server on 127.0.0.1 answering POST /applications with ``handler``."""
    app = web.Application()
    app.router.add_post("/applications", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _result(rate: float, p99_ms: float, errors: dict[str, int] | None = None) -> RateResult:
    errors = errors or {}
    requests = 1000
    return RateResult(
        rate=rate,
        seconds=5,
        requests=requests,
        ok=requests - sum(errors.values()),
        errors=errors,
        send_rate=rate,
        throughput=rate,
        p50_ms=p99_ms / 4,
        p95_ms=p99_ms / 2,
        p99_ms=p99_ms,
        max_ms=p99_ms * 2,
        mean_ms=p99_ms / 3,
        send_lag_p99_ms=0.5,
        send_lag_max_ms=1.0,
    )


# --- statistics -------------------------------------------------------------------


def test_percentiles_are_nearest_rank_values_of_the_sample() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([float(v) for v in range(1, 1001)], 99) == 990
    assert percentile([7.5], 99) == 7.5


def test_the_p99_of_a_few_values_is_their_worst_not_an_interpolation() -> None:
    assert percentile([1.0, 2.0, 3.0, 1000.0], 99) == 1000.0
    assert percentile([1.0, 2.0, 3.0, 1000.0], 50) == 2.0


def test_a_percentile_of_nothing_or_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"not in 0\.\.100"):
        percentile([1.0], 101)


def test_a_summary_counts_202_as_ok_and_groups_everything_else_by_outcome() -> None:
    samples = [Sample(i / 100, 0.1, float(i + 1), "202") for i in range(96)]
    samples += [
        Sample(0.96, 0.1, 500.0, "503"),
        Sample(0.97, 0.1, 500.0, "503"),
        Sample(0.98, 0.2, 10_000.0, "TimeoutError"),
        Sample(0.99, 7.0, 97.0, "409"),
    ]
    result = summarise_samples(100.0, 1.0, samples)
    assert result.requests == 100
    assert result.ok == 96
    assert result.errors == {"409": 1, "503": 2, "TimeoutError": 1}
    assert result.error_count == 4
    assert result.error_fraction == pytest.approx(0.04)
    assert result.p50_ms == 50.0
    assert result.p99_ms == 500.0
    assert result.max_ms == 10_000.0
    assert result.send_lag_max_ms == 7.0
    # 100 sends spread over 0.99 s on schedule: 100 requests in 100 intervals.
    assert result.send_rate == pytest.approx(100.0, rel=0.01)


def test_a_result_survives_the_json_round_trip_of_the_subprocess() -> None:
    result = _result(300, 12.5, {"503": 3})
    assert RateResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


# --- bodies -----------------------------------------------------------------------


def test_generated_bodies_are_valid_applications_with_distinct_pans() -> None:
    requests = [ApplicationRequest.model_validate_json(body_for(i, seed=3)) for i in range(500)]
    assert len({r.pan_number for r in requests}) == 500
    assert {r.loan_type.value for r in requests} == {"PERSONAL", "HOME", "AUTO"}
    assert len({r.applicant_name for r in requests}) > 20
    assert all(15_000 <= r.monthly_income_inr <= 400_000 for r in requests)
    assert all(50_000 <= r.loan_amount_inr < 15_000_000 for r in requests)
    assert len({r.monthly_income_inr for r in requests}) > 450


def test_bodies_write_amounts_as_two_decimal_json_numbers_like_the_contract() -> None:
    body = json.loads(body_for(42), parse_float=str)
    assert isinstance(body["monthly_income_inr"], str)  # parsed as a number literal
    assert len(body["monthly_income_inr"].split(".")[1]) == 2
    assert body["loan_amount_inr"].endswith(".00")


def test_bodies_are_deterministic_per_index_and_differ_between_seeds() -> None:
    assert body_for(7, seed=1) == body_for(7, seed=1)
    assert pan_for(7, seed=1) != pan_for(7, seed=2)
    assert {pan_for(i, 1) for i in range(300)}.isdisjoint({pan_for(i, 2) for i in range(300)})


def test_generated_pans_never_hit_the_pans_with_fixed_scores() -> None:
    pans = {pan_for(i, seed) for seed in range(3) for i in range(2000)}
    assert all(pan[3] == "P" for pan in pans)
    assert not pans & {"ABCDE1234F", "FGHIJ5678K"}


# --- the open-loop schedule ---------------------------------------------------------


async def test_latency_counts_the_wait_for_a_busy_connection_from_the_schedule() -> None:
    service_s = 0.04

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(service_s)
        return web.json_response({"status": "PENDING"}, status=202)

    # One connection, 40 ms per request, one request every 20 ms: the queue grows by
    # 20 ms per request. Request k is scheduled at 20k ms and cannot finish before
    # 40(k+1) ms, so its latency from the schedule is at least 40 + 20k ms, although
    # the server spends only 40 ms on it.
    async with _server(slow) as url:
        samples = await collect(LoadSpec(url, rate=50, seconds=0.2, connections=1))
    assert [s.outcome for s in samples] == ["202"] * 10
    for k, sample in enumerate(samples):
        assert sample.latency_ms >= 40 + 20 * k - 1
    assert samples[-1].latency_ms >= 4 * service_s * 1000


async def test_requests_scheduled_during_a_server_stall_are_charged_the_stall() -> None:
    stall_until: list[float] = []

    async def stalling(_request: web.Request) -> web.Response:
        # The first request starts a 300 ms stall that holds every request arriving in it.
        if not stall_until:
            stall_until.append(time.perf_counter() + 0.3)
        await asyncio.sleep(max(0.0, stall_until[0] - time.perf_counter()))
        return web.json_response({"status": "PENDING"}, status=202)

    async with _server(stalling) as url:
        samples = await collect(LoadSpec(url, rate=100, seconds=0.5))
    assert len(samples) == 50
    stalled = [s for s in samples if s.scheduled_s < 0.25]
    assert len(stalled) >= 20
    # Each one waited from its own scheduled time until the stall ended.
    for s in stalled:
        assert s.latency_ms >= (0.3 - s.scheduled_s) * 1000 - 15
    # Those scheduled after the stall are not charged it: latency is per request.
    after = [s for s in samples if s.scheduled_s > 0.4]
    assert min(s.latency_ms for s in after) < min(s.latency_ms for s in stalled)


async def test_warm_up_requests_are_sent_but_not_reported() -> None:
    received: list[bytes] = []

    async def accept(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"status": "PENDING"}, status=202)

    async with _server(accept) as url:
        result = await run_rate(LoadSpec(url, rate=100, seconds=0.2, warmup_s=0.1))
    assert len(received) == 30
    assert result.requests == 20
    assert result.ok == 20
    assert result.errors == {}


async def test_each_request_carries_its_own_idempotency_key_when_asked() -> None:
    keys: list[str | None] = []

    async def accept(request: web.Request) -> web.Response:
        keys.append(request.headers.get("Idempotency-Key"))
        return web.json_response({"status": "PENDING"}, status=202)

    async with _server(accept) as url:
        await run_rate(LoadSpec(url, rate=200, seconds=0.1, idempotency=True))
        await run_rate(LoadSpec(url, rate=200, seconds=0.1))
    assert len(keys) == 40
    with_key = [k for k in keys if k is not None]
    assert len(with_key) == 20
    assert len(set(with_key)) == 20


async def test_error_statuses_and_refused_connections_are_counted_as_errors() -> None:
    calls: list[int] = []

    async def flaky(_request: web.Request) -> web.Response:
        calls.append(1)
        status = 503 if len(calls) % 4 == 0 else 202
        return web.json_response({}, status=status)

    async with _server(flaky) as url:
        result = await run_rate(LoadSpec(url, rate=200, seconds=0.2))
    assert result.ok == 30
    assert result.errors == {"503": 10}

    nobody = f"http://127.0.0.1:{free_port()}"
    refused = await run_rate(LoadSpec(nobody, rate=100, seconds=0.05, timeout_s=2))
    assert refused.ok == 0
    assert refused.errors == {"ClientConnectorError": 5}


def test_a_spec_with_no_rate_or_no_connection_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid load spec"):
        LoadSpec("http://x", rate=0, seconds=1)
    with pytest.raises(ValueError, match="invalid load spec"):
        LoadSpec("http://x", rate=10, seconds=1, connections=0)


# --- verdicts ---------------------------------------------------------------------


def test_the_sustained_rate_is_the_highest_with_p99_within_limit_and_no_error() -> None:
    results = [
        _result(100, 4.0),
        _result(300, 9.0),
        _result(600, 30.0, {"503": 1}),  # fast but one error: not sustained
        _result(900, 49.9),
        _result(1200, 50.1),
    ]
    assert sustained_rate(results) == 900
    assert sustained_rate(results, p99_limit_ms=10) == 300
    assert sustained_rate([_result(100, 80.0)]) is None
    assert sustained_rate([]) is None


def test_a_sweep_stops_when_p99_is_far_past_the_limit_or_errors_exceed_one_percent() -> None:
    assert not should_stop(_result(100, 199.0))
    assert should_stop(_result(100, 201.0))
    assert should_stop(_result(100, 60.0), stop_factor=1.0)
    assert not should_stop(_result(100, 5.0, {"503": 10}))  # exactly 1 %
    assert should_stop(_result(100, 5.0, {"503": 11}))


def test_a_sweep_runs_rates_in_ascending_order_and_skips_those_past_overload() -> None:
    p99_by_rate = {100.0: 3.0, 200.0: 20.0, 400.0: 70.0, 800.0: 900.0, 1600.0: 5000.0}
    ran: list[LoadSpec] = []

    def fake(spec: LoadSpec) -> RateResult:
        ran.append(spec)
        return _result(spec.rate, p99_by_rate[spec.rate])

    result = sweep("http://x", [800, 100, 1600, 400, 200], 5, pause_s=0, runner=fake)
    assert [s.rate for s in ran] == [100, 200, 400, 800]
    assert len({s.seed for s in ran}) == 4  # fresh PANs at every rate
    assert result.sustained == 200
    assert result.stopped_early
    assert result.skipped_rates == [1600]
    assert result.to_dict()["sustained_rate"] == 200


def test_a_sweep_that_never_overloads_runs_every_rate() -> None:
    result = sweep("http://x", [10, 20], 1, pause_s=0, runner=lambda s: _result(s.rate, 1.0))
    assert [r.rate for r in result.results] == [10, 20]
    assert result.sustained == 20
    assert not result.stopped_early


# --- pgbench ------------------------------------------------------------------------

PGBENCH_THROTTLED = """\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /work/main/bench/pgbench/submit.sql
scaling factor: 1
query mode: prepared
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 576
number of failed transactions: 0 (0.000%)
number of transactions skipped: 0 (0.000%)
number of transactions above the 50.0 ms latency limit: 0/576 (0.000%)
latency average = 1.012 ms
latency stddev = 0.732 ms
rate limit schedule lag: avg 0.131 (max 4.082) ms
initial connection time = 22.185 ms
tps = 291.591238 (without initial connection time)
"""

PGBENCH_UNTHROTTLED = """\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /work/main/bench/pgbench/submit.sql
scaling factor: 1
query mode: prepared
number of clients: 2
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 1456
number of failed transactions: 0 (0.000%)
latency average = 2.737 ms
initial connection time = 11.228 ms
tps = 730.690769 (without initial connection time)
"""


def test_the_pgbench_summary_gives_tps_latency_and_lag() -> None:
    figures = parse_summary(PGBENCH_THROTTLED)
    assert figures == {
        "clients": 4,
        "threads": 2,
        "transactions": 576,
        "failed": 0,
        "skipped": 0,
        "latency_avg_ms": 1.012,
        "latency_stddev_ms": 0.732,
        "lag_avg_ms": 0.131,
        "lag_max_ms": 4.082,
        "tps": 291.591238,
    }


def test_an_unthrottled_pgbench_summary_has_no_stddev_or_lag() -> None:
    figures = parse_summary(PGBENCH_UNTHROTTLED)
    assert figures["tps"] == 730.690769
    assert figures["transactions"] == 1456
    assert "latency_stddev_ms" not in figures
    assert "lag_avg_ms" not in figures


def test_pgbench_output_without_a_tps_line_is_a_failure() -> None:
    with pytest.raises(ValueError, match="no tps"):
        parse_summary("pgbench: error: connection to server failed\n")


def test_the_transaction_log_gives_latencies_lags_and_skipped_transactions() -> None:
    log = [
        "0 1 3495 0 1795316230 32748 88",
        "0 2 2433 0 1795316230 35429 474",
        "1 1 skipped 0 1795316230 35675 51000",
        "1 2 1200 0 1795316230 35675 0",
        "",
    ]
    latencies, lags, unfinished = parse_transaction_log(log)
    assert latencies == [3.495, 2.433, 1.2]
    assert lags == [0.088, 0.474, 0.0]
    assert unfinished == 1


def test_a_pgbench_run_combines_the_summary_with_percentiles_from_the_log() -> None:
    log = [f"0 {i} {i * 1000} 0 1795316230 0" for i in range(1, 101)]
    run = build_run(parse_summary(PGBENCH_UNTHROTTLED), log, seconds=2, rate=None, idempotency=True)
    assert run.tps == 730.7
    assert run.clients == 2
    assert run.latency_avg_ms == 2.737
    # Not in an unthrottled summary: computed from the log (population stddev of 1..100).
    assert run.latency_stddev_ms == pytest.approx(28.866, abs=0.001)
    assert (run.p50_ms, run.p95_ms, run.p99_ms, run.max_ms) == (50.0, 95.0, 99.0, 100.0)
    assert run.lag_p99_ms is None
    assert run.idempotency


def test_a_throttled_run_keeps_the_stddev_pgbench_printed_and_reports_schedule_lag() -> None:
    log = [f"0 {i} {i * 100} 0 1795316230 0 {i * 10}" for i in range(1, 201)]
    run = build_run(parse_summary(PGBENCH_THROTTLED), log, seconds=2, rate=300, idempotency=False)
    assert run.latency_stddev_ms == 0.732
    assert run.lag_p99_ms == 1.98
    assert run.lag_max_ms == 2.0
    assert run.p99_ms == 19.8
    assert run.rate == 300
