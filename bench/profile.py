"""Where each process's CPU goes at a pipeline rate: py-spy profiles under load.

Starts the six processes as :mod:`bench.pipeline_bench` does, loads them at ``--rate``
applications/s, and meanwhile samples every process (and its uvicorn workers) with
``py-spy record`` for ``--seconds``. Writes each process's folded stacks
(``<out>/<process>.folded``, the input of any flame-graph tool) and prints, per process,
the share of samples by library (where each sample's innermost frame sits) and the
innermost functions that took the most samples. Only on-CPU samples are counted
(py-spy's default, without ``--idle``): waiting on a socket costs no CPU.

Usage: ``python -m bench.profile [--rate 300] [--seconds 15] [--out bench/results/profile]``
(``make profile``; py-spy needs ptrace, which root has).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench.loadgen import LoadSpec, run_rate_in_subprocess
from bench.pipeline_bench import running_pipeline
from bench.relay_latency import ROOT
from bench.report import emit_json
from runtime.dev_issuer import issue_token
from runtime.settings import Settings
from tests.support.pipeline import PROCESSES

DATABASE = "prequal_bench_profile"
SAMPLES_PER_S = 100
TOP = 12
#: Our packages, named as such in the summaries.
PACKAGES = (
    "runtime",
    "schema",
    "outbox",
    "messaging",
    "command_api",
    "query_api",
    "credit_worker",
    "decision_worker",
)


def library(frame: str) -> str:
    """The library (or our package) a py-spy frame ``"fn (psycopg/cursor.py:12)"`` is in.

    py-spy writes a file's path relative to the ``sys.path`` entry it was found on, so
    its first part is the top-level package (or the stdlib module). A frame with no file
    is the process itself: the sample caught native code with no Python frame above it.
    """
    if " (" not in frame:
        return "native"
    path = frame.rsplit(" (", 1)[1].rsplit(":", 1)[0]
    parts = Path(path).parts
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif str(ROOT) in path:
        parts = Path(path).relative_to(ROOT).parts
    top = parts[0].removesuffix(".py") if parts else "?"
    if top in PACKAGES:
        return top
    if top in sys.stdlib_module_names:
        return "python (stdlib)"
    return top


def summarise(folded: str) -> dict[str, Any]:
    """Per library and per innermost function: the share of on-CPU samples, in percent.

    ``folded`` is py-spy's raw output: one ``frame;frame;…;innermost count`` line per stack.
    """
    by_library: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        innermost = stack.rsplit(";", 1)[-1]
        by_library[library(innermost)] += int(count)
        by_function[innermost] += int(count)
        total += int(count)

    def shares(counter: Counter[str], top: int) -> dict[str, float]:
        return {name: round(100 * n / total, 1) for name, n in counter.most_common(top)}

    return {
        "samples": total,
        "by_library_pct": shares(by_library, TOP) if total else {},
        "top_functions_pct": shares(by_function, TOP) if total else {},
    }


def profile(admin: Settings, rate: float, seconds: float, out: Path) -> dict[str, Any]:
    """Profile every process for ``seconds`` while the pipeline runs at ``rate``."""
    out.mkdir(parents=True, exist_ok=True)
    with running_pipeline(admin, DATABASE, "bench-profile") as pipeline:
        token = issue_token(pipeline.settings, "bench", ["applications:write"])
        # The load outlasts the samples on both sides: warm at the start, busy to the end.
        spec = LoadSpec(url=pipeline.command, rate=rate, seconds=seconds + 6, token=token)
        load = threading.Thread(target=run_rate_in_subprocess, args=(spec,), daemon=True)
        load.start()
        threading.Event().wait(3)
        samplers = {
            name: _sample(process.popen.pid, seconds, out / f"{name}.folded")
            for name, process in pipeline.processes.items()
        }
        for name, sampler in samplers.items():
            _, errors = sampler.communicate(timeout=seconds + 60)
            if sampler.returncode != 0:
                raise RuntimeError(f"py-spy failed on {name}: {errors}")
        load.join(seconds + 120)
    return {
        "rate": rate,
        "seconds": seconds,
        "processes": {
            name: summarise((out / f"{name}.folded").read_text(errors="replace"))
            for name in PROCESSES
        },
    }


def _sample(pid: int, seconds: float, path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            str(SAMPLES_PER_S),
            "--duration",
            str(int(seconds)),
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def main() -> None:
    """Profile the pipeline and print (and optionally save) the summaries as JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile")
    args = parser.parse_args()
    result = profile(Settings(), args.rate, args.seconds, args.out)
    emit_json(result, args.out / "summary.json")


if __name__ == "__main__":
    main()
