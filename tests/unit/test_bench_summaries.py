"""The benchmark's summaries: CPU per decided application, medians of rounds, targets."""

from __future__ import annotations

from typing import Any

from bench import api_bench, pipeline_bench, profile, relay_drain, report


def _run(rate: float, round_: int, p99: float, system_ms: float, sustained: bool) -> dict[str, Any]:
    return {
        "rate": rate,
        "round": round_,
        "accepted": 100,
        "decided": 100,
        "visible_p50_ms": p99 / 2,
        "visible_p99_ms": p99,
        "sustained": sustained,
        "cpu_ms_per_application": {"kafka-broker": system_ms / 2, "system": system_ms},
    }


def test_cpu_per_application_divides_each_roles_seconds_by_the_applications_decided() -> None:
    cost = pipeline_bench.cpu_ms_per_application(
        {"postgresql": 0.5, "kafka-broker": 0.25}, generator_s=0.1, decided=100
    )

    assert cost == {
        "postgresql": 5.0,
        "kafka-broker": 2.5,
        "system": 7.5,
        "load-generator": 1.0,
    }


def test_nothing_decided_has_no_cost_per_application_rather_than_a_division_by_zero() -> None:
    assert pipeline_bench.cpu_ms_per_application({"postgresql": 1.0}, 0.1, 0) == {}


def test_the_pipeline_summary_takes_the_median_of_each_rate_over_its_rounds() -> None:
    runs = [
        _run(300, 1, 200, 2.0, True),
        _run(600, 1, 900, 1.5, True),
        _run(300, 2, 400, 3.0, True),
        _run(600, 2, 3000, 1.4, False),
        _run(300, 3, 240, 2.4, True),
        _run(600, 3, 800, 1.6, True),
    ]

    summary = pipeline_bench.summary(runs)

    at_300 = summary["by_rate"][300.0]
    assert at_300["visible_p99_ms"] == {"median": 240.0, "min": 200.0, "max": 400.0, "rounds": 3}
    assert at_300["cpu_ms_per_application"]["median"] == 2.4
    assert at_300["cpu_ms_by_role"]["kafka-broker"] == 1.2
    assert summary["by_rate"][600.0]["sustained_rounds"] == 2
    # Each round's highest sustained rate: 600, 300, 600.
    assert summary["sustained_rate"] == {"median": 600.0, "min": 300.0, "max": 600.0, "rounds": 3}


def _sweep(sustained: float | None, p99s: dict[float, float]) -> dict[str, Any]:
    return {
        "sustained_rate": sustained,
        "results": [
            {"rate": rate, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": p99, "max_ms": 9.0, "ok": 1}
            for rate, p99 in p99s.items()
        ],
    }


def test_the_api_summary_quotes_each_sides_sustained_rate_and_their_ratio_per_round() -> None:
    rounds = [
        {
            "round": 1,
            "outbox": _sweep(1500, {1500: 40.0, 1750: 90.0}),
            report.BASELINE: _sweep(750, {750: 30.0}),
        },
        {
            "round": 2,
            "outbox": _sweep(1250, {1500: 60.0}),
            report.BASELINE: _sweep(500, {750: 80.0}),
        },
        {
            "round": 3,
            "outbox": _sweep(1500, {1500: 45.0}),
            report.BASELINE: _sweep(None, {750: 300.0}),
        },
    ]

    summary = api_bench.summary(rounds)

    assert summary["sustained_rate"]["outbox"]["median"] == 1500.0
    assert summary["sustained_rate"][report.BASELINE]["median"] == 500.0
    # A round whose baseline sustained nothing has no ratio; the others: 2.0 and 2.5.
    assert summary["outbox_over_baseline"] == {"median": 2.25, "min": 2.0, "max": 2.5, "rounds": 2}
    assert summary["by_rate"][1500.0]["outbox"]["p99_ms"] == 45.0
    assert summary["by_rate"][1750.0]["outbox"]["rounds"] == 1


def test_a_target_is_met_only_when_the_median_of_its_rounds_meets_it() -> None:
    runs = [
        _run(300, n, p99, cost, True)
        for n, p99, cost in ((1, 200, 2.0), (2, 300, 2.6), (3, 400, 3.0))
    ]
    record = {"pipeline": {"runs": runs, **pipeline_bench.summary(runs)}}

    verdicts = {target: (figure, met) for target, figure, met in report.targets(record)}

    [cpu] = [v for t, v in verdicts.items() if t.startswith("Whole-system CPU")]
    [p99] = [v for t, v in verdicts.items() if "≤ 250 ms at 300/s" in t]
    assert cpu == ("2.60 ms (2.00 to 3.00)", False)
    assert p99 == ("300 ms (200 to 400)", False)


def test_the_relay_summary_leaves_out_rounds_that_did_not_complete() -> None:
    runs = [
        {"relay": "polling", "complete": True, "events_per_s": 30_000},
        {"relay": "polling", "complete": False, "events_per_s": 0},
        {"relay": "polling", "complete": True, "events_per_s": 20_000},
        {"relay": "debezium", "complete": False},
    ]

    summary = relay_drain.summary(runs)

    assert summary["polling"] == {"median": 25_000.0, "min": 20_000.0, "max": 30_000.0, "rounds": 2}
    assert summary["debezium"] is None


def test_a_profile_counts_each_sample_where_its_innermost_frame_is() -> None:
    folded = "\n".join(
        [
            "<module> (x.py:1);run (uvicorn/main.py:5);execute (psycopg/cursor.py:9) 20",
            "<module> (x.py:1);execute (/v/lib/python3.11/site-packages/psycopg/c.py:9) 10",
            "<module> (x.py:1);handle (messaging/consumer.py:150) 10",
            "<module> (x.py:1);loads (json/__init__.py:3) 5",
            'process 42:"/usr/bin/python -m x" 5',
            "not a stack line",
        ]
    )

    summary = profile.summarise(folded)

    assert summary["samples"] == 50
    assert summary["by_library_pct"] == {
        "psycopg": 60.0,
        "messaging": 20.0,
        "python (stdlib)": 10.0,
        "native": 10.0,
    }
    assert next(iter(summary["top_functions_pct"])).startswith("execute")


def test_an_empty_profile_has_no_shares() -> None:
    assert profile.summarise("") == {"samples": 0, "by_library_pct": {}, "top_functions_pct": {}}
