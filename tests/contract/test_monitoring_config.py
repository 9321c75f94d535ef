"""The Prometheus config, its alert rules and the Grafana dashboard match the code.

Prometheus scrapes all six processes at their compose names and Settings default ports;
every runbook threshold (docs/operations.md) has an alert rule; the dashboard reads any
Prometheus data source through its ``DS_PROMETHEUS`` variable, whether imported by hand or
provisioned by the compose ``monitoring`` profile, whose provisioning files point at files
that exist. Every ``prequal_*`` series the rules or the dashboard query is one the code
registers: the registry is read in a fresh interpreter
that imports every module using prometheus_client, so this test's process registers
nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.contract.test_compose import (
    PROCESS_PORT_FIELDS,
    container_ports,
    default_port,
    environment,
    load_compose,
)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = ROOT / "infra" / "grafana"
DASHBOARD = GRAFANA_DIR / "prequal-dashboard.json"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"
#: Where the Grafana image reads provisioning files (GF_PATHS_PROVISIONING's default).
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
RUNBOOK = ROOT / "docs" / "operations.md"

METRIC = re.compile(r"prequal_[a-z_]+")
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")
#: What the dashboard must chart: the runbook's series plus lag and publish latency.
DASHBOARD_SERIES = {
    "prequal_http_requests_total",
    "prequal_http_request_duration_seconds",
    "prequal_outbox_pending",
    "prequal_outbox_oldest_pending_age_seconds",
    "prequal_relay_published_events_total",
    "prequal_relay_failed_batches_total",
    "prequal_relay_batch_seconds",
    "prequal_relay_publish_latency_seconds",
    "prequal_consumer_lag",
    "prequal_consumer_messages_total",
    "prequal_consumer_batch_seconds",
    "prequal_consumer_retries_total",
    "prequal_db_circuit_breaker_state",
    "prequal_submit_to_decision_visible_seconds",
}

# Run in a child interpreter: imports every module that uses prometheus_client (so a
# metric added anywhere is found) and creates the gauges the relay creates at start-up.
_LIST_REGISTERED = """
import importlib, json, pathlib, sys
from prometheus_client import REGISTRY
root = pathlib.Path.cwd()
for package in sys.argv[1:]:
    for path in sorted((root / package).rglob("*.py")):
        if "migrations" in path.parts or "prometheus_client" not in path.read_text():
            continue
        parts = path.relative_to(root).with_suffix("").parts
        importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
from outbox.metrics import OutboxGauges
OutboxGauges(lambda: (0, 0.0))
names = set()
for family in REGISTRY.collect():
    names.add(family.name)
    if family.type == "counter":
        names.add(family.name + "_total")
    names.update(sample.name for sample in family.samples)
print(json.dumps(sorted(name for name in names if name.startswith("prequal_"))))
"""


def load_yaml(path: Path) -> Any:
    """A YAML file as data."""
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml."""
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard."""
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def series(text: str) -> set[str]:
    """The metric names ``text`` mentions, histogram series suffixes stripped."""
    names = set()
    for found in METRIC.findall(text):
        name = found
        for suffix in SERIES_SUFFIXES:
            name = name.removesuffix(suffix)
        names.add(name)
    return names


def referenced_series() -> list[str]:
    """Every metric alerts.yml or the dashboard queries."""
    return sorted(series(ALERTS.read_text()) | series(DASHBOARD.read_text()))


def runbook_series() -> set[str]:
    """The series in docs/operations.md's metrics table."""
    rows = re.findall(r"^\| `(prequal_[a-z_]+)", RUNBOOK.read_text(), re.MULTILINE)
    assert rows, "docs/operations.md lost its metrics table"
    return set(rows)


@cache
def registered_metrics() -> frozenset[str]:
    """Names of every series the code registers (families and their samples)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [entry["include"] for entry in pyproject["tool"]["poetry"]["packages"]]
    result = subprocess.run(
        [sys.executable, "-c", _LIST_REGISTERED, *packages],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return frozenset(json.loads(result.stdout))


# ---------------------------------------------------------------------------- Prometheus


def scrape_targets() -> dict[str, list[str]]:
    """{job name: targets} of prometheus.yml."""
    config = load_yaml(PROMETHEUS_CONFIG)
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }


def test_the_prometheus_config_parses_and_loads_the_alert_rules_beside_it() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)

    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS_DIR / config["rule_files"][0]).is_file()


def test_prometheus_scrapes_each_of_the_six_processes_at_its_settings_default_port() -> None:
    targets = scrape_targets()

    for process in PROCESS_PORT_FIELDS:
        assert targets.get(process) == [f"{process}:{default_port(process)}"], process


def test_every_scraped_host_is_a_compose_service() -> None:
    services = load_compose()["services"]

    for job, hosts in scrape_targets().items():
        for target in hosts:
            host = target.rsplit(":", 1)[0]
            assert host in services or host == "localhost", f"{job}: {target}"


def test_compose_mounts_this_prometheus_config_into_prometheus() -> None:
    prometheus = load_compose()["services"]["prometheus"]

    assert "./infra/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


# ---------------------------------------------------------------------------- alert rules


def test_every_alert_rule_has_an_expression_a_severity_and_a_summary() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]

    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_series_in_the_runbooks_metrics_table_has_an_alert_rule() -> None:
    alerted = set().union(*(series(rule["expr"]) for rule in alert_rules()))

    missing = runbook_series() - alerted
    assert not missing, f"no alert on {sorted(missing)}"


def rule(name: str) -> dict[str, Any]:
    """The alert rule called ``name``."""
    return next(r for r in alert_rules() if r["alert"] == name)


def compact(expr: str) -> str:
    """An expression without whitespace, for comparisons."""
    return re.sub(r"\s+", "", expr)


@pytest.mark.parametrize(
    ("alert", "threshold", "duration"),
    [
        ("PrequalApiServerErrors", ">0.01", "5m"),
        ("PrequalSubmitLatencyHigh", ">0.05", "10m"),
        ("PrequalSubmitGroupsNearCap", ">32", "10m"),
        ("PrequalOutboxBacklog", ">1000", "5m"),
        ("PrequalOutboxStuck", ">30", None),
        ("PrequalRelayFailedBatches", ">0", None),
        ("PrequalRelayBatchSlow", ">1", "5m"),
        ("PrequalRelayPublishSlow", ">1", "5m"),
        ("PrequalConsumerLagHigh", ">5000", "5m"),
        ("PrequalConsumerLagGrowing", ">0", None),
        ("PrequalDeadLetters", ">0", None),
        ("PrequalConsumerBatchSlow", ">1", "5m"),
        ("PrequalDecisionSlow", ">5", "5m"),
        ("PrequalDatabaseBreakerOpen", "==2", "1m"),
    ],
)
def test_alert_thresholds_are_the_runbooks(
    alert: str, threshold: str, duration: str | None
) -> None:
    found = rule(alert)

    assert compact(found["expr"]).endswith(threshold)
    assert found.get("for") == duration


def test_the_submit_latency_alert_watches_post_applications_on_the_command_api() -> None:
    expr = compact(rule("PrequalSubmitLatencyHigh")["expr"])

    assert 'service="command-api"' in expr
    assert 'route="/applications"' in expr
    assert 'method="POST"' in expr
    assert expr.startswith("histogram_quantile(0.99,")


def test_every_quantile_reads_histogram_buckets_aggregated_by_le() -> None:
    texts = [rule["expr"] for rule in alert_rules()] + [
        target["expr"] for panel in panels() for target in panel.get("targets", [])
    ]

    quantiles = [compact(t) for t in texts if "histogram_quantile" in t]
    assert quantiles
    for expr in quantiles:
        assert re.search(r"sumby\([^)]*\ble\)\(rate\(prequal_[a-z_]+_bucket", expr), expr


# ------------------------------------------------------------------------------- Grafana


def panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, rows' children included."""
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_the_dashboard_picks_its_prometheus_data_source_through_a_ds_prometheus_variable() -> None:
    board = dashboard()
    [selector, *others] = board["templating"]["list"]

    # A datasource variable works both when imported by hand and when provisioned (which
    # never resolves import __inputs); with __inputs too, an import would pin one uid and
    # leave the variable choosing nothing.
    assert "__inputs" not in board
    assert selector["name"] == "DS_PROMETHEUS"
    assert selector["type"] == "datasource"
    assert selector["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    charts = [panel for panel in panels() if panel["type"] != "row"]
    assert charts
    for panel in charts:
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    assert others
    for variable in others:
        assert variable["datasource"] == expected, variable["name"]


def test_the_dashboard_has_unique_panel_ids_and_a_stable_uid() -> None:
    ids = [panel["id"] for panel in panels()]

    assert len(ids) == len(set(ids))
    assert dashboard()["uid"] == "prequal-overview"
    assert dashboard()["id"] is None, "an exported id would clash on import"


def test_the_dashboard_charts_every_series_the_operators_watch() -> None:
    charted = set().union(
        *(series(target["expr"]) for panel in panels() for target in panel.get("targets", []))
    )

    missing = DASHBOARD_SERIES - charted
    assert not missing, f"not charted: {sorted(missing)}"


@pytest.mark.parametrize(
    "title_words",
    [
        ("HTTP", "latency", "p50", "p99"),
        ("HTTP", "status"),
        ("pending",),
        ("oldest", "pending"),
        ("published",),
        ("failed",),
        ("publish latency", "commit", "ack", "p50", "p99"),
        ("lag", "partition"),
        ("outcome",),
        ("dead-lettered",),
        ("batch latency", "p99"),
        ("retries",),
        ("Submit", "decision", "p50", "p95", "p99"),
    ],
)
def test_the_dashboard_has_a_panel_for(title_words: tuple[str, ...]) -> None:
    titles = [panel["title"].lower() for panel in panels()]

    assert any(all(word.lower() in title for word in title_words) for title in titles), titles


def test_the_consumer_lag_panel_is_per_consumer_topic_and_partition() -> None:
    lag = next(panel for panel in panels() if "lag" in panel["title"].lower())
    expr = compact(lag["targets"][0]["expr"])

    assert "sumby(consumer,topic,partition)(prequal_consumer_lag" in expr


def test_the_outcome_panel_splits_by_outcome_so_dead_letters_show() -> None:
    outcome = next(panel for panel in panels() if "outcome" in panel["title"].lower())

    assert "by(consumer,outcome)" in compact(outcome["targets"][0]["expr"])


# -------------------------------------------------------------- Grafana provisioning


def grafana() -> dict[str, Any]:
    """The compose file's grafana service."""
    service = load_compose()["services"]["grafana"]
    assert isinstance(service, dict)
    return service


def grafana_bind_mounts() -> dict[str, Path]:
    """{path in the container: repository path} of the grafana service's bind mounts."""
    mounts = {}
    for volume in grafana()["volumes"]:
        source, target = str(volume).split(":")[:2]
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def in_repository(container_path: str) -> Path:
    """The repository path Grafana sees at ``container_path`` (the deepest mount holding it)."""
    mounts = grafana_bind_mounts()
    holding = [t for t in mounts if container_path == t or container_path.startswith(t + "/")]
    assert holding, f"{container_path} is on no bind mount of the grafana service"
    target = max(holding, key=len)
    return mounts[target] / container_path.removeprefix(target).lstrip("/")


def files_in(container_dir: str) -> set[Path]:
    """Repository files Grafana sees in ``container_dir`` (mounted directories and files)."""
    mounts = grafana_bind_mounts()
    found: set[Path] = set()
    for target, source in mounts.items():
        if target == container_dir and source.is_dir():
            found.update(path for path in source.iterdir() if path.is_file())
        elif target.startswith(container_dir + "/") and "/" not in target[len(container_dir) + 1 :]:
            found.add(source)
    return found


def provisioning(kind: str) -> list[dict[str, Any]]:
    """The provisioning files Grafana reads for ``kind`` (datasources, dashboards), parsed."""
    files = sorted(files_in(f"{GRAFANA_PROVISIONING}/{kind}"))
    assert files, f"nothing mounted at {GRAFANA_PROVISIONING}/{kind}"
    parsed = [load_yaml(path) for path in files if path.suffix in {".yml", ".yaml"}]
    for document in parsed:
        assert document["apiVersion"] == 1
    return parsed


def test_every_bind_mount_of_grafana_is_a_repository_path_that_exists() -> None:
    for target, source in grafana_bind_mounts().items():
        assert source.exists(), f"{target} <- {source}: missing"


def test_every_provisioning_file_of_the_repository_is_mounted_where_grafana_reads_it() -> None:
    written = {path for path in PROVISIONING_DIR.rglob("*") if path.is_file()}
    mounted = files_in(f"{GRAFANA_PROVISIONING}/datasources") | files_in(
        f"{GRAFANA_PROVISIONING}/dashboards"
    )

    assert written
    assert {path.resolve() for path in written} == {path.resolve() for path in mounted}


def test_the_provisioned_data_source_is_the_compose_prometheus_and_the_default_one() -> None:
    [source] = [ds for doc in provisioning("datasources") for ds in doc["datasources"]]
    prometheus = load_compose()["services"]["prometheus"]
    port = container_ports(prometheus)

    assert source["type"] == "prometheus"  # what the DS_PROMETHEUS variable lists
    assert source["isDefault"] is True  # what the variable selects on a fresh Grafana
    assert source["access"] == "proxy"  # the browser cannot resolve "prometheus"
    assert source["url"] in {f"http://prometheus:{p}" for p in port}


def test_the_dashboard_provider_loads_the_repository_dashboard_and_nothing_else() -> None:
    [provider] = [p for doc in provisioning("dashboards") for p in doc["providers"]]

    assert provider["type"] == "file"
    loaded = {path.resolve() for path in files_in(provider["options"]["path"])}
    assert loaded == {DASHBOARD.resolve()}


def test_grafana_opens_on_the_provisioned_dashboard_without_a_login() -> None:
    env = environment(grafana())
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]

    assert in_repository(home).resolve() == DASHBOARD.resolve()
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"  # anonymous users cannot edit


# ------------------------------------------------------------------ names the code owns


def test_the_rules_and_the_dashboard_reference_metrics_at_all() -> None:
    assert len(referenced_series()) >= len(DASHBOARD_SERIES)


@pytest.mark.parametrize("metric", referenced_series())
def test_every_metric_the_rules_and_dashboard_query_is_registered_by_the_code(
    metric: str,
) -> None:
    registered = registered_metrics()

    assert metric in registered, f"{metric} is queried but no module registers it"
