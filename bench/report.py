"""Turn a ``bench.run`` record into a Markdown section, a PNG plot and a sanity verdict."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt

from bench.repeats import Spread

TARGET_API_RATE = 1500
TARGET_API_P99_MS = 50
TARGET_API_SHARE_OF_CEILING = 0.40
TARGET_OUTBOX_OVER_BASELINE = 1.5
TARGET_CPU_MS_AT = 300
TARGET_CPU_MS = 2.5
TARGET_PIPELINE_P99_MS = 250
TARGET_PIPELINE_P99_AT = 300
TARGET_PIPELINE_RATE = 600
TARGET_PIPELINE_P99_AT_RATE_MS = 1000
TARGET_RELAY_EVENTS_S = 10_000
BASELINE = "baseline_inline_publish"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _figure(found: dict[str, float] | None, digits: int = 0, unit: str = "") -> str:
    """A Spread dict as ``median (min to max)``; "not run" when absent."""
    if found is None:
        return "not run"
    return Spread(found["median"], found["min"], found["max"], int(found["rounds"])).format(
        digits, unit
    )


def _median(found: dict[str, float] | None) -> float | None:
    return None if found is None else float(found["median"])


def _at(record: dict[str, Any], rate: float) -> dict[str, Any] | None:
    by_rate: dict[Any, dict[str, Any]] = record["pipeline"]["by_rate"]
    return by_rate.get(rate) or by_rate.get(str(float(rate)))


def _api_targets(record: dict[str, Any]) -> list[tuple[str, str, bool]]:
    summary = record["command_api"]["summary"]
    outbox = summary["sustained_rate"].get("outbox")
    rate = _median(outbox) or 0.0
    out = [
        (
            f"Command API ≥ {TARGET_API_RATE:,} POST/s with p99 ≤ {TARGET_API_P99_MS} ms",
            _figure(outbox, unit=" POST/s"),
            rate >= TARGET_API_RATE,
        )
    ]
    if "postgres_ceiling" in record:
        ceiling = float(record["postgres_ceiling"]["ceiling_tps"])
        out.append(
            (
                f"Command API ≥ {TARGET_API_SHARE_OF_CEILING:.0%} of the pgbench ceiling of"
                " its own transaction",
                f"{rate:,.0f} / {ceiling:,.0f} tps = {rate / ceiling:.0%}",
                rate >= TARGET_API_SHARE_OF_CEILING * ceiling,
            )
        )
    ratio = summary["outbox_over_baseline"]
    out.append(
        (
            f"Outbox API ≥ {TARGET_OUTBOX_OVER_BASELINE}× the inline-publish baseline's"
            " sustained rate",
            _figure(ratio, 2, "×"),
            (_median(ratio) or 0.0) >= TARGET_OUTBOX_OVER_BASELINE,
        )
    )
    return out


def _pipeline_targets(record: dict[str, Any]) -> list[tuple[str, str, bool]]:
    cpu_at = _at(record, TARGET_CPU_MS_AT)
    cost = None if cpu_at is None else cpu_at["cpu_ms_per_application"]
    p99_at = _at(record, TARGET_PIPELINE_P99_AT)
    p99 = None if p99_at is None else p99_at["visible_p99_ms"]
    top = _at(record, TARGET_PIPELINE_RATE)
    top_p99 = None if top is None else top["visible_p99_ms"]
    sustained = record["pipeline"]["sustained_rate"]
    return [
        (
            f"Whole-system CPU per decided application ≤ {TARGET_CPU_MS} ms at"
            f" {TARGET_CPU_MS_AT}/s",
            _figure(cost, 2, " ms"),
            (_median(cost) or float("inf")) <= TARGET_CPU_MS,
        ),
        (
            f"Pipeline p99 submit → visible ≤ {TARGET_PIPELINE_P99_MS} ms at"
            f" {TARGET_PIPELINE_P99_AT}/s",
            _figure(p99, unit=" ms"),
            (_median(p99) or float("inf")) <= TARGET_PIPELINE_P99_MS,
        ),
        (
            f"Pipeline ≥ {TARGET_PIPELINE_RATE}/s sustained without backlog growth",
            _figure(sustained, unit="/s"),
            (_median(sustained) or 0.0) >= TARGET_PIPELINE_RATE,
        ),
        (
            f"Pipeline p99 submit → visible ≤ {TARGET_PIPELINE_P99_AT_RATE_MS:,} ms at"
            f" {TARGET_PIPELINE_RATE}/s",
            _figure(top_p99, unit=" ms"),
            (_median(top_p99) or float("inf")) <= TARGET_PIPELINE_P99_AT_RATE_MS,
        ),
    ]


def targets(record: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, median (spread), met) for each of issue 17's targets in ``record``.

    A target is met only if the median of its rounds meets it.
    """
    out: list[tuple[str, str, bool]] = []
    if "command_api" in record:
        out += _api_targets(record)
    if "pipeline" in record:
        out += _pipeline_targets(record)
    if "relay_drain" in record:
        polling = record["relay_drain"]["summary"].get("polling")
        out.append(
            (
                f"Polling relay ≥ {TARGET_RELAY_EVENTS_S:,} events/s draining a backlog",
                _figure(polling, unit=" events/s"),
                (_median(polling) or 0.0) >= TARGET_RELAY_EVENTS_S,
            )
        )
    return out


def _api_rows(record: dict[str, Any]) -> list[str]:
    by_rate = record["command_api"]["summary"]["by_rate"]
    rows = [
        "| rate /s | outbox p50 | p95 | p99 | max | errors | rounds | baseline p50 | p95 | p99 "
        "| max | errors | rounds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for rate, sides in by_rate.items():
        cells = [f"{float(rate):,.0f}"]
        for side in ("outbox", BASELINE):
            run = sides.get(side)
            if run is None:
                cells += ["(not reached: overloaded at a lower rate)", "", "", "", "", ""]
                continue
            cells += [_ms(run[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
            cells += [f"{run['errors']:g}", str(run["rounds"])]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _api_cpu_lines(record: dict[str, Any]) -> list[str]:
    """Cores used per process role at each outbox rate, median over the rounds."""
    found: dict[str, dict[str, list[float]]] = {}
    for round_ in record["command_api"]["rounds"]:
        for rate, cores in round_["outbox"].get("cores_used_by_rate", {}).items():
            for role, value in cores.items():
                found.setdefault(rate, {}).setdefault(role, []).append(value)
    lines = [
        f"- {float(rate):,.0f}/s: "
        + ", ".join(f"{role} {median(values):.2f}" for role, values in sorted(roles.items()))
        for rate, roles in sorted(found.items(), key=lambda item: float(item[0]))
    ]
    if not lines:
        return []
    return ["Cores used per role at each outbox rate (of 2; median of the rounds):", "", *lines]


def _pipeline_rows(record: dict[str, Any]) -> list[str]:
    rows = [
        "| rate /s | rounds sustained | p50 ms | p99 ms | CPU ms per application (system) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate, figures in record["pipeline"]["by_rate"].items():
        rows.append(
            f"| {float(rate):,.0f} | {figures['sustained_rounds']} of {figures['rounds']} "
            f"| {_figure(figures['visible_p50_ms'], 1)} | {_figure(figures['visible_p99_ms'], 1)} "
            f"| {_figure(figures['cpu_ms_per_application'], 2)} |"
        )
    return rows


def _cpu_role_rows(record: dict[str, Any]) -> list[str]:
    by_rate = record["pipeline"]["by_rate"]
    roles = sorted({role for figures in by_rate.values() for role in figures["cpu_ms_by_role"]})
    roles = [r for r in roles if r not in ("system", "load-generator")] + [
        "system",
        "load-generator",
    ]
    rows = [
        "| rate /s | " + " | ".join(roles) + " |",
        "| ---: | " + " | ".join("---:" for _ in roles) + " |",
    ]
    for rate, figures in by_rate.items():
        cost = figures["cpu_ms_by_role"]
        rows.append(
            f"| {float(rate):,.0f} | "
            + " | ".join(f"{cost.get(role, 0.0):.2f}" for role in roles)
            + " |"
        )
    return rows


def _commit_interval_rows(record: dict[str, Any]) -> list[str]:
    rows = [
        "| commit interval | rate /s | p50 ms | p99 ms | CPU ms per application (system) "
        "| of which the broker | of which the credit worker |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for interval, found in record["commit_interval"]["by_interval"].items():
        for rate, figures in found["by_rate"].items():
            cost = figures["cpu_ms_by_role"]
            rows.append(
                f"| {interval} ms | {float(rate):,.0f} | {_figure(figures['visible_p50_ms'], 1)} "
                f"| {_figure(figures['visible_p99_ms'], 1)} "
                f"| {_figure(figures['cpu_ms_per_application'], 2)} "
                f"| {cost.get('kafka-broker', 0.0):.2f} | {cost.get('credit-worker', 0.0):.2f} |"
            )
    return rows


def markdown(record: dict[str, Any]) -> str:
    """The generated part of docs/benchmarks.md."""
    m = record["machine"]
    lines = [
        f"Run of {m['date']}{' (smoke: figures meaningless)' if record.get('smoke') else ''}"
        f" on {m['cpus']} × {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"Python {m['python']}; PostgreSQL {m['postgresql']} "
        f"(fsync={m['postgresql_durability']['fsync']}, synchronous_commit="
        f"{m['postgresql_durability']['synchronous_commit']}); Kafka {m['kafka']}; "
        f"Debezium {m['debezium']}; librdkafka {m['librdkafka']}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f". Settings: {', '.join(f'{k}={v}' for k, v in m['settings'].items())}. "
        "Everything — database, broker, Connect, the processes and the load generator — "
        "on the same machine." + (f" Note: {m['note']}." if m.get("note") else ""),
        "",
        "### Targets",
        "",
        "Each figure is the median of its rounds, with the spread (lowest to highest) in"
        " brackets; a target is met only if the median meets it.",
        "",
        "| target | median (spread) | met |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t} | {v} | {'yes' if ok else '**no**'} |" for t, v, ok in targets(record)]
    if "pipeline" in record:
        lines += [
            "",
            "### Full pipeline: submit → decision visible (six processes, polling relay)",
            "",
            "Every rate once per round, lowest first, for "
            f"{len(record['pipeline']['runs']) // max(len(record['pipeline']['by_rate']), 1)}"
            " rounds. Latency per application: the projector's commit minus the accepting"
            " commit. CPU: every process's CPU time from the start of the load until the"
            " backlog drained, divided by the applications decided; system = everything but"
            " the load generator.",
            "",
            *_pipeline_rows(record),
            "",
            "CPU milliseconds per decided application, by role (median of the rounds):",
            "",
            *_cpu_role_rows(record),
        ]
    if "commit_interval" in record:
        lines += [
            "",
            "### The credit worker's commit interval",
            "",
            "One Kafka transaction per batch; a batch closes when it is full or when the"
            " interval after its first message has passed. Each interval on a pipeline of"
            " its own, the intervals taking turns round by round.",
            "",
            *_commit_interval_rows(record),
        ]
    if "command_api" in record:
        lines += [
            "",
            "### Command API alone: outbox against the original design, same rates",
            "",
            "Open-loop arrivals; latency from each request's scheduled send time, in ms,"
            " median of the rounds that reached the rate. Outbox: application + event in"
            " one commit. Baseline: commit, then publish inline (acks=all) and wait for the"
            " delivery report. The sides take turns round by round.",
            "",
            *_api_rows(record),
            "",
            *_api_cpu_lines(record),
        ]
    if "postgres_ceiling" in record:
        ceiling = record["postgres_ceiling"]
        lines += [
            "",
            "### PostgreSQL's ceiling for the same transaction (pgbench)",
            "",
            "| clients | tps | avg ms | p99 ms |",
            "| ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['clients']} | {r['tps']:,.0f} | {_ms(r['latency_avg_ms'])} "
            f"| {_ms(r['p99_ms'])} |"
            for r in ceiling["runs"]
        ]
    if "relay_drain" in record:
        lines += [
            "",
            "### Relay throughput: draining a backlog",
            "",
            "| relay | rows | events/s (first → last), median (spread) |",
            "| --- | ---: | ---: |",
        ]
        rows = {run["relay"]: run["rows"] for run in record["relay_drain"]["runs"]}
        for relay, found in record["relay_drain"]["summary"].items():
            lines.append(f"| {relay} | {rows[relay]:,} | {_figure(found)} |")
    return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], path: Path) -> None:
    """Median latency percentiles against arrival rate: the API (both sides), the pipeline."""
    fig, (api, pipe) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"p50_ms": "-", "p95_ms": "--", "p99_ms": ":"}
    by_rate = record.get("command_api", {}).get("summary", {}).get("by_rate", {})
    for side, colour in (("outbox", "tab:blue"), (BASELINE, "tab:red")):
        reached = [(float(rate), sides[side]) for rate, sides in by_rate.items() if side in sides]
        for key, style in styles.items():
            api.plot(
                [rate for rate, _ in reached],
                [run[key] for _, run in reached],
                style,
                color=colour,
                marker="o",
                label=f"{side} {key[:3]}",
            )
    api.axhline(TARGET_API_P99_MS, color="grey", linewidth=0.8)
    api.set(
        title="Command API: POST latency (median of rounds)",
        xlabel="arrival rate (requests/s)",
        ylabel="ms (log)",
        yscale="log",
    )
    api.legend(fontsize=7)
    rates = record.get("pipeline", {}).get("by_rate", {})
    for key, style in (("visible_p50_ms", "-"), ("visible_p99_ms", ":")):
        points = [(float(rate), f[key]["median"]) for rate, f in rates.items() if f[key]]
        pipe.plot(
            [rate for rate, _ in points],
            [value for _, value in points],
            style,
            color="tab:green",
            marker="o",
            label=key.split("_")[1],
        )
    pipe.axhline(TARGET_PIPELINE_P99_MS, color="grey", linewidth=0.8)
    pipe.set(
        title="Pipeline: submit → decision visible (median of rounds)",
        xlabel="arrival rate (applications/s)",
        ylabel="ms (log)",
        yscale="log",
    )
    pipe.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def emit_json(results: Any, out: Path | None) -> None:
    """Print ``results`` as JSON and, when ``out`` is given, write them there too."""
    text = json.dumps(results, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def write_docs(path: Path, text: str, begin: str, end: str) -> None:
    """Replace the text between the ``begin`` and ``end`` markers of ``path``."""
    document = path.read_text()
    head, _, rest = document.partition(begin)
    _, _, tail = rest.partition(end)
    if not rest:
        raise ValueError(f"{path} has no {begin} marker")
    path.write_text(f"{head}{begin}\n{text}{end}{tail}")


def problems(record: dict[str, Any]) -> list[str]:
    """What says the harness itself did not work (not a missed target)."""
    found = []
    for round_ in record.get("command_api", {}).get("rounds", []):
        for side in ("outbox", BASELINE):
            results = round_.get(side, {}).get("results", [])
            if not results or results[0]["ok"] == 0:
                found.append(
                    f"command_api round {round_['round']} {side}: no request accepted at the"
                    " lowest rate"
                )
    for section in ("pipeline", "commit_interval"):
        lowest: dict[Any, dict[str, Any]] = {}
        for run in record.get(section, {}).get("runs", []):
            key = (run.get("round"), run.get("interval_ms"))
            if key not in lowest or run["rate"] < lowest[key]["rate"]:
                lowest[key] = run
        for run in lowest.values():
            if run["decided"] < run["accepted"]:
                found.append(
                    f"{section}: {run['accepted'] - run['decided']} accepted never decided"
                    f" at {run['rate']:g}/s"
                )
    for run in record.get("relay_drain", {}).get("runs", []):
        if not run.get("complete"):
            found.append(f"relay_drain {run['relay']}: {run['delivered']}/{run['rows']} delivered")
    ceiling = record.get("postgres_ceiling")
    if ceiling is not None and not ceiling["ceiling_tps"] > 0:
        found.append("postgres_ceiling: pgbench committed nothing")
    return found
