"""The before/after comparison's commands and table (bench/ab.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ab import server_sides, sides, table


def _sweep(sustained: float | None, p99s: dict[float, float]) -> dict[str, Any]:
    return {
        "sustained_rate": sustained,
        "results": [{"rate": r, "p50_ms": p / 4, "p99_ms": p} for r, p in p99s.items()],
        "cores_used_by_rate": {f"{r:g}": {"command-api": r / 1000} for r in p99s},
    }


def test_the_before_side_imports_the_other_checkout_through_pythonpath(tmp_path: Path) -> None:
    commands = sides(tmp_path)

    assert commands["before"][:2] == ["env", f"PYTHONPATH={tmp_path.resolve()}"]
    assert commands["before"][2:] == commands["after"]
    assert commands["after"][0].endswith("command-api")


def test_each_server_side_runs_this_checkout_with_its_http_server_chosen() -> None:
    commands = server_sides(["uvicorn", "granian"])

    assert list(commands) == ["uvicorn", "granian"]
    assert commands["granian"][:2] == ["env", "PREQUAL_COMMAND_API_HTTP_SERVER=granian"]
    assert commands["uvicorn"][2:] == commands["granian"][2:]
    assert commands["granian"][2].endswith("command-api")


def test_the_table_names_its_sides_as_the_rounds_do() -> None:
    rounds = [
        {"round": n, "uvicorn": _sweep(500, {500: 30.0}), "granian": _sweep(750, {500: 20.0})}
        for n in (1, 2, 3)
    ]

    lines = table(rounds).splitlines()

    assert lines[2].startswith("| uvicorn | 500 | 500 | 3 |")
    assert lines[3].startswith("| granian | 750 | 500 | 3 |")
    assert len(lines) == 4


def test_the_table_gives_each_sides_medians_and_leaves_out_rates_a_round_never_reached() -> None:
    rounds = [
        {
            "round": 1,
            "before": _sweep(250, {250: 10.0, 500: 200.0}),
            "after": _sweep(500, {250: 8.0, 500: 30.0, 750: 90.0}),
        },
        {
            "round": 2,
            "before": _sweep(None, {250: 60.0}),
            "after": _sweep(500, {250: 9.0, 500: 40.0}),
        },
        {
            "round": 3,
            "before": _sweep(250, {250: 12.0, 500: 180.0}),
            "after": _sweep(500, {250: 7.0, 500: 35.0}),
        },
    ]

    lines = table(rounds).splitlines()

    assert (
        "| before | 250 (0 to 250) | 250 | 3 | 3.0 (2.5 to 15.0) | 12.0 (10.0 to 60.0) | 1.00 |"
        in lines
    )
    assert (
        "| before | 250 (0 to 250) | 500 | 2 | 47.5 (45.0 to 50.0)"
        " | 190.0 (180.0 to 200.0) | 1.00 |" in lines
    )
    assert "| after | 500 | 750 | 1 | 22.5 | 90.0 | 1.00 |" in lines
    assert len(lines) == 2 + 2 + 3
