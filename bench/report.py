"""Turn a ``bench.run`` record into a Markdown section, a PNG plot and a sanity verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt

TARGET_API_RATE = 1000
TARGET_API_P99_MS = 50
TARGET_PIPELINE_P99_MS = 250
TARGET_PIPELINE_RATE = 300
TARGET_RELAY_EVENTS_S = 10_000


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _errors(run: dict[str, Any]) -> str:
    errors = run.get("errors") or {}
    return str(sum(errors.values())) if errors else "0"


def _api_rows(record: dict[str, Any]) -> list[str]:
    section = record["command_api"]
    by_rate: dict[float, dict[str, dict[str, Any]]] = {}
    for mode, outcome in section.items():
        for run in outcome["results"]:
            by_rate.setdefault(run["rate"], {})[mode] = run
    rows = [
        "| rate /s | outbox p50 | p95 | p99 | max | errors | baseline p50 | p95 | p99 | max "
        "| errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate in sorted(by_rate):
        cells = [f"{rate:,.0f}"]
        for mode in ("outbox", "baseline_inline_publish"):
            run = by_rate[rate].get(mode)
            if run is None:
                cells += ["(not run: overloaded at a lower rate)", "", "", "", ""]
                continue
            cells += [_ms(run[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
            cells.append(_errors(run))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _api_cpu_lines(record: dict[str, Any]) -> list[str]:
    """Cores used per process role at each outbox rate (the generator reports its own)."""
    outbox = record["command_api"]["outbox"]
    by_rate = outbox.get("cores_used_by_rate", {})
    lines = []
    for run in outbox["results"]:
        cores = by_rate.get(f"{float(run['rate']):g}")
        if not cores:
            continue
        used = ", ".join(f"{role} {value:.2f}" for role, value in cores.items())
        lines.append(
            f"- {run['rate']:,.0f}/s: {used}; load generator "
            f"{run.get('client_cpu_pct', 0) / 100:.2f} (cores, of 2)"
        )
    return ["CPU per role during each outbox rate:", "", *lines] if lines else []


def _sustained(record: dict[str, Any], mode: str) -> float | None:
    value = record["command_api"][mode]["sustained_rate"]
    return None if value is None else float(value)


def _best_pipeline_p99_at(record: dict[str, Any], rate: float) -> float | None:
    for run in record["pipeline"]["runs"]:
        if run["rate"] == rate:
            value = run["visible_p99_ms"]
            return None if value is None else float(value)
    return None


def _relay_rate(record: dict[str, Any], relay: str) -> float | None:
    for run in record["relay_drain"]:
        if run["relay"] == relay and run.get("complete"):
            return float(run["events_per_s"])
    return None


def targets(record: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each of issue 6's targets present in ``record``."""
    out: list[tuple[str, str, bool]] = []
    if "command_api" in record:
        sustained = _sustained(record, "outbox") or 0.0
        out.append(
            (
                f"Command API ≥ {TARGET_API_RATE:,} POST/s with p99 ≤ {TARGET_API_P99_MS} ms",
                f"{sustained:,.0f} POST/s",
                sustained >= TARGET_API_RATE,
            )
        )
        if "postgres_ceiling" in record:
            ceiling = float(record["postgres_ceiling"]["ceiling_tps"])
            out.append(
                (
                    "Command API ≥ pgbench ceiling of its own transaction",
                    f"{sustained:,.0f} / {ceiling:,.0f} tps = {sustained / ceiling:.0%}",
                    sustained >= ceiling,
                )
            )
    if "pipeline" in record:
        p99 = _best_pipeline_p99_at(record, 100)
        out.append(
            (
                f"Pipeline p99 submit → visible ≤ {TARGET_PIPELINE_P99_MS} ms at 100/s",
                "not run" if p99 is None else f"{p99:,.0f} ms",
                p99 is not None and p99 <= TARGET_PIPELINE_P99_MS,
            )
        )
        rate = record["pipeline"]["sustained_rate"] or 0.0
        out.append(
            (
                f"Pipeline ≥ {TARGET_PIPELINE_RATE}/s sustained without backlog growth",
                f"{rate:,.0f}/s",
                rate >= TARGET_PIPELINE_RATE,
            )
        )
    if "relay_drain" in record:
        polling = _relay_rate(record, "polling") or 0.0
        out.append(
            (
                f"Polling relay ≥ {TARGET_RELAY_EVENTS_S:,} events/s draining a backlog",
                f"{polling:,.0f} events/s",
                polling >= TARGET_RELAY_EVENTS_S,
            )
        )
    return out


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
        "on the same machine.",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t} | {v} | {'yes' if ok else '**no**'} |" for t, v, ok in targets(record)]
    if "command_api" in record:
        lines += [
            "",
            "### Command API alone: outbox against the original design, same rates",
            "",
            "Open-loop arrivals; latency from each request's scheduled send time, in ms. "
            "Outbox: application + event in one commit. Baseline: commit, then publish "
            "inline (acks=all) and wait for the delivery report.",
            "",
            *_api_rows(record),
            "",
            f"Highest rate with p99 ≤ {TARGET_API_P99_MS} ms and no error: outbox "
            f"{_fmt_rate(_sustained(record, 'outbox'))}, baseline "
            f"{_fmt_rate(_sustained(record, 'baseline_inline_publish'))}.",
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
    if "pipeline" in record:
        lines += [
            "",
            "### Full pipeline: submit → decision visible (six processes, polling relay)",
            "",
            "| rate /s | accepted | decided | p50 ms | p95 ms | p99 ms | max ms "
            "| backlog max | growth /s | drained after | sustained |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in record["pipeline"]["runs"]:
            drained = "never" if r["drained_after_s"] is None else f"{r['drained_after_s']} s"
            lines.append(
                f"| {r['rate']:,.0f} | {r['accepted']:,} | {r['decided']:,} "
                f"| {_ms(r['visible_p50_ms'])} | {_ms(r['visible_p95_ms'])} "
                f"| {_ms(r['visible_p99_ms'])} | {_ms(r['visible_max_ms'])} "
                f"| {r['backlog_max']:,} | {r['backlog_growth_per_s']} | {drained} "
                f"| {'yes' if r['sustained'] else 'no'} |"
            )
    if "relay_drain" in record:
        lines += [
            "",
            "### Relay throughput: draining a backlog",
            "",
            "| relay | rows | events/s (first → last) | drain s | start → last s |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in record["relay_drain"]:
            if not r.get("complete"):
                lines.append(f"| {r['relay']} | {r['rows']:,} | incomplete | | |")
                continue
            lines.append(
                f"| {r['relay']} | {r['rows']:,} | {r['events_per_s']:,} | {r['drain_s']} "
                f"| {r['start_to_last_s']} |"
            )
    return "\n".join(lines) + "\n"


def _fmt_rate(rate: float | None) -> str:
    return "none of the rates tried" if rate is None else f"{rate:,.0f}/s"


def plot(record: dict[str, Any], path: Path) -> None:
    """Latency percentiles against arrival rate: the API (both modes) and the pipeline."""
    fig, (api, pipe) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"p50_ms": "-", "p95_ms": "--", "p99_ms": ":"}
    for mode, colour in (("outbox", "tab:blue"), ("baseline_inline_publish", "tab:red")):
        runs = record.get("command_api", {}).get(mode, {}).get("results", [])
        for key, style in styles.items():
            api.plot(
                [r["rate"] for r in runs],
                [r[key] for r in runs],
                style,
                color=colour,
                marker="o",
                label=f"{mode} {key[:3]}",
            )
    api.axhline(TARGET_API_P99_MS, color="grey", linewidth=0.8)
    api.set(
        title="Command API: POST latency",
        xlabel="arrival rate (requests/s)",
        ylabel="ms (log)",
        yscale="log",
    )
    api.legend(fontsize=7)
    runs = record.get("pipeline", {}).get("runs", [])
    for key, style in (("visible_p50_ms", "-"), ("visible_p95_ms", "--"), ("visible_p99_ms", ":")):
        pipe.plot(
            [r["rate"] for r in runs],
            [r[key] for r in runs],
            style,
            color="tab:green",
            marker="o",
            label=key.split("_")[1],
        )
    pipe.axhline(TARGET_PIPELINE_P99_MS, color="grey", linewidth=0.8)
    pipe.set(
        title="Pipeline: submit → decision visible",
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
    for mode, outcome in record.get("command_api", {}).items():
        if not outcome["results"] or outcome["results"][0]["ok"] == 0:
            found.append(f"command_api {mode}: no request accepted at the lowest rate")
    for run in record.get("pipeline", {}).get("runs", [])[:1]:
        if run["decided"] < run["accepted"]:
            found.append(f"pipeline: {run['accepted'] - run['decided']} accepted never decided")
    for run in record.get("relay_drain", []):
        if not run.get("complete"):
            found.append(f"relay_drain {run['relay']}: {run['delivered']}/{run['rows']} delivered")
    ceiling = record.get("postgres_ceiling")
    if ceiling is not None and not ceiling["ceiling_tps"] > 0:
        found.append("postgres_ceiling: pgbench committed nothing")
    return found
