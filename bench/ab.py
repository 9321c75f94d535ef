"""The command API two ways, in one run: two checkouts, or two HTTP servers; interleaved rounds.

Usage (from this checkout, its servers up: ``infra/local.sh up``)::

    git worktree add /tmp/before <commit>
    python -m bench.ab --before /tmp/before [--rates 250,500,750,1000,1250] [--rounds 3]
    python -m bench.ab --servers uvicorn,granian

``--before``: both sides run this checkout's ``command-api`` console script; the
"before" side with ``PYTHONPATH`` set to the other checkout, so its packages are
imported instead (the dependencies are this environment's). ``--servers``: each side is
this checkout with ``PREQUAL_COMMAND_API_HTTP_SERVER`` set to one server. Each round
sweeps every side, in turn, over the same open-loop rates
(:func:`bench.api_bench.sweep_rounds`: fresh server, empty tables, two workers, the rate
limit on and out of reach), so a slow spell of the shared machine lands on all of them.
Prints a Markdown table of medians and spreads per side and rate; the rounds go to
``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from bench.api_bench import sweep_rounds
from bench.relay_latency import ROOT
from bench.repeats import ROUNDS, spread
from bench.report import emit_json
from runtime.settings import Settings

RATES = [250.0, 500.0, 750.0, 1000.0, 1250.0]
SECONDS = 10.0


def _script() -> str:
    return shutil.which("command-api") or "command-api"


def sides(before: Path) -> dict[str, list[str]]:
    """The two server commands: this checkout's script, importing ``before``'s packages."""
    return {"before": ["env", f"PYTHONPATH={before.resolve()}", _script()], "after": [_script()]}


def server_sides(servers: list[str]) -> dict[str, list[str]]:
    """One server command per HTTP server (``Settings.command_api_http_server``), by name."""
    return {s: ["env", f"PREQUAL_COMMAND_API_HTTP_SERVER={s}", _script()] for s in servers}


def table(rounds: list[dict[str, Any]]) -> str:
    """Markdown: per side and rate, p50 / p99 and the API's CPU per request, median (spread).

    ``rounds``: :func:`bench.api_bench.sweep_rounds`'s result. A rate a round's sweep
    stopped before is left out of that rate's figures.
    """
    lines = [
        "| side | sustained POST/s (p99 ≤ 50 ms) | rate /s | rounds | p50 ms | p99 ms"
        " | command-api CPU ms per request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = [k for k in rounds[0] if k != "round"] if rounds else []
    for side in [s for s in names if all(s in r for r in rounds)]:
        sweeps = [r[side] for r in rounds]
        sustained = spread(s["sustained_rate"] or 0 for s in sweeps).format()
        rates = sorted({x["rate"] for s in sweeps for x in s["results"]})
        for rate in rates:
            runs = [x for s in sweeps for x in s["results"] if x["rate"] == rate]
            cores = [
                s["cores_used_by_rate"][f"{rate:g}"]["command-api"]
                for s in sweeps
                if "command-api" in s["cores_used_by_rate"].get(f"{rate:g}", {})
            ]
            cpu = spread(c * 1000 / rate for c in cores).format(2) if cores else "-"
            lines.append(
                f"| {side} | {sustained} | {rate:,.0f} | {len(runs)}"
                f" | {spread(x['p50_ms'] for x in runs).format(1)}"
                f" | {spread(x['p99_ms'] for x in runs).format(1)} | {cpu} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Run the comparison; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--before", type=Path, help="the other checkout")
    which.add_argument("--servers", help="HTTP servers to compare, e.g. uvicorn,granian")
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES))
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ab.json")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    commands = server_sides(args.servers.split(",")) if args.servers else sides(args.before)
    rounds = sweep_rounds(Settings(), commands, rates, args.seconds, args.rounds)
    emit_json(rounds, args.out)
    print(table(rounds))


if __name__ == "__main__":
    main()
