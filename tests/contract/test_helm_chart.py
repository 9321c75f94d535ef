"""The Helm chart deploy/helm/prequal runs the system as Kubernetes expects it to be run.

Rendered by ``helm template`` with each values file of the chart's ``ci/`` folder, the
chart sets only real ``PREQUAL_*`` settings, takes every secret from a Secret, probes and
sizes every process, keeps a disruption budget for each, runs the relay as an active
instance beside a standby, and scales the workers on their consumer lag. Schema
validation of the same renders (kubeconform) is infra/validate-chart.sh's job.

helm is found in .infra/bin (or ``$PREQUAL_TOOLS_DIR/bin``), where
``infra/validate-chart.sh tools`` installs it, or on PATH. Without it these tests fail
with that hint: they never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import SecretStr

from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "prequal"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "prequal"
#: A go-installed helm assumes Kubernetes 1.20 unless told; Chart.yaml requires >= 1.29.
KUBE_VERSION = "1.37.0"

#: Each long-running process, named as its console script (and its Deployment suffix).
PROCESSES = (
    "command-api",
    "query-api",
    "credit-worker",
    "decision-worker",
    "query-projector",
    "outbox-relay",
)
#: The workers scaled on consumer lag, and the settings naming their group and topic.
LAG_SCALED = {
    "credit-worker": ("PREQUAL_GROUP_CREDIT_WORKER", "PREQUAL_TOPIC_SUBMITTED"),
    "decision-worker": ("PREQUAL_GROUP_DECISION_WORKER", "PREQUAL_TOPIC_CREDIT_REPORTS"),
}

Manifest = dict[str, Any]


def _helm() -> str:
    """The helm binary's path; fails the test (never skips) with how to install it."""
    tools_dir = Path(os.environ.get("PREQUAL_TOOLS_DIR", ROOT / ".infra"))
    for candidate in (tools_dir / "bin" / "helm", ROOT / ".infra" / "bin" / "helm"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("helm")
    if found is None:
        pytest.fail(
            "helm is not installed: run `infra/validate-chart.sh tools` (go install"
            " helm.sh/helm/v3/cmd/helm into .infra/bin), or put helm on PATH"
        )
    return found


def _template(*args: str) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart with extra arguments; the completed process."""
    command = [_helm(), "template", RELEASE, str(CHART), "--namespace", "prequal"]
    return subprocess.run(
        [*command, "--kube-version", KUBE_VERSION, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _render(values: Path, *extra: str) -> list[Manifest]:
    """The manifests rendered with ``values``; fails the test with helm's error."""
    result = _template("--values", str(values), *extra)
    assert result.returncode == 0, f"helm template -f {values.name}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=CI_VALUES, ids=[p.stem for p in CI_VALUES])
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    """The chart rendered with one values file of ``ci/``."""
    values: Path = request.param
    return _render(values)


def _of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def _workloads(manifests: list[Manifest]) -> dict[str, Manifest]:
    """Deployments and StatefulSets by component label."""
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in _of_kind(manifests, "Deployment") + _of_kind(manifests, "StatefulSet")
    }


def _pod_specs(manifests: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(resource name, pod spec) of every Deployment, StatefulSet, Job and CronJob."""
    for m in manifests:
        kind = m.get("kind")
        if kind in ("Deployment", "StatefulSet", "Job"):
            yield m["metadata"]["name"], m["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield m["metadata"]["name"], m["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _config_map(manifests: list[Manifest]) -> dict[str, str]:
    (config_map,) = _of_kind(manifests, "ConfigMap")
    data: dict[str, str] = config_map["data"]
    return data


def _settings_variables() -> set[str]:
    """Every variable Settings reads, from its fields as the code defines them now."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def _secret_variables() -> set[str]:
    """The variables of Settings' SecretStr fields."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {
        f"{prefix}{name}".upper()
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr
    }


def test_the_chart_is_rendered_with_every_values_file_of_its_ci_folder() -> None:
    names = {p.name for p in CI_VALUES}
    assert {"default-values.yaml", "production-values.yaml", "hpa-values.yaml"} <= names


def test_every_prequal_variable_the_chart_sets_is_a_settings_field(
    rendered: list[Manifest],
) -> None:
    set_by_chart = set(_config_map(rendered))
    for _, spec in _pod_specs(rendered):
        for container in spec["containers"]:
            set_by_chart |= {e["name"] for e in container.get("env", [])}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    set_by_chart |= set(values["config"]) | set(values["secrets"]["keys"])
    prequal = {name for name in set_by_chart if name.startswith("PREQUAL_")}
    assert prequal, "the chart sets no PREQUAL_* variable at all"
    unknown = sorted(prequal - _settings_variables())
    assert not unknown, f"not fields of runtime.settings.Settings: {unknown}"


def test_the_access_control_settings_are_in_the_config_map_of_a_production_install() -> None:
    data = _config_map(_render(CHART / "ci" / "production-values.yaml"))
    assert data["PREQUAL_ENVIRONMENT"] == "production"
    assert data["PREQUAL_AUTH_JWKS_URL"].startswith("https://")
    assert data["PREQUAL_AUTH_ISSUER"]
    assert data["PREQUAL_AUTH_AUDIENCE"]


def test_secrets_come_from_a_secret_and_never_from_a_literal_value(
    rendered: list[Manifest],
) -> None:
    secrets = _secret_variables()
    assert secrets, "Settings has no SecretStr field: nothing to check"
    assert not _of_kind(rendered, "Secret"), "the chart must not create a Secret from values"
    assert not secrets & set(_config_map(rendered)), "a secret setting is in the ConfigMap"
    for name, spec in _pod_specs(rendered):
        for container in spec["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            from_secret_refs = any("secretRef" in s for s in container.get("envFrom", []))
            for variable in secrets:
                entry = env.get(variable)
                if entry is None:
                    assert from_secret_refs, f"{name} does not receive {variable}"
                    continue
                assert "value" not in entry, f"{name} sets {variable} as a literal value"
                assert "secretKeyRef" in entry.get(
                    "valueFrom", {}
                ), f"{name} must read {variable} from a Secret (secretKeyRef)"


def test_a_secret_setting_in_the_values_is_refused() -> None:
    result = _template(
        "--values",
        str(CHART / "ci" / "default-values.yaml"),
        "--set",
        "config.PREQUAL_PG_PASSWORD=hunter2",
    )
    assert result.returncode != 0
    assert "PREQUAL_PG_PASSWORD is a secret" in result.stderr
    assert "hunter2" not in result.stderr


def test_a_production_install_without_an_https_jwks_url_is_refused() -> None:
    result = _template("--set", "config.PREQUAL_ENVIRONMENT=production")
    assert result.returncode != 0
    assert "auth.jwksUrl" in result.stderr


def test_every_process_has_a_workload_with_probes_and_resource_requests(
    rendered: list[Manifest],
) -> None:
    workloads = _workloads(rendered)
    assert set(workloads) == set(PROCESSES)
    for name, deployment in workloads.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == [name]
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        requests = container["resources"]["requests"]
        assert requests.get("cpu"), name
        assert requests.get("memory"), name


def test_the_credit_worker_keeps_its_instance_name_when_a_pod_is_replaced(
    rendered: list[Manifest],
) -> None:
    worker = _workloads(rendered)["credit-worker"]
    # Its transactional.id is built from PREQUAL_INSTANCE_ID: ordinal pod names keep it
    # stable, so a replacement pod fences its predecessor's transaction.
    assert worker["kind"] == "StatefulSet"
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    (instance,) = [e for e in container["env"] if e["name"] == "PREQUAL_INSTANCE_ID"]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_every_workload_has_a_pod_disruption_budget(rendered: list[Manifest]) -> None:
    budgets = {
        b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for b in _of_kind(rendered, "PodDisruptionBudget")
    }
    assert budgets == set(_workloads(rendered))


def test_the_relay_runs_as_one_active_instance_and_one_standby(
    rendered: list[Manifest],
) -> None:
    relay = _workloads(rendered)["outbox-relay"]
    assert relay["spec"]["replicas"] == 2
    # A rollout never takes both down: the standby keeps the lock's successor ready.
    assert relay["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (budget,) = [
        b
        for b in _of_kind(rendered, "PodDisruptionBudget")
        if b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "outbox-relay"
    ]
    assert budget["spec"]["minAvailable"] == 1


def test_the_workers_are_scaled_on_their_consumer_lag(rendered: list[Manifest]) -> None:
    config = _config_map(rendered)
    workloads = _workloads(rendered)
    scaled_objects = {
        s["spec"]["scaleTargetRef"]["name"]: s for s in _of_kind(rendered, "ScaledObject")
    }
    autoscalers = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in _of_kind(rendered, "HorizontalPodAutoscaler")
    }
    for worker, (group_setting, topic_setting) in LAG_SCALED.items():
        target = workloads[worker]["metadata"]["name"]
        # The autoscaler owns the replica count; a fixed one would fight it.
        assert "replicas" not in workloads[worker]["spec"], worker
        group, topic = config[group_setting], config[topic_setting]
        if target in scaled_objects:
            assert (
                scaled_objects[target]["spec"]["scaleTargetRef"]["kind"]
                == workloads[worker]["kind"]
            )
            (trigger,) = scaled_objects[target]["spec"]["triggers"]
            assert trigger["type"] == "kafka"
            assert trigger["metadata"]["consumerGroup"] == group
            assert trigger["metadata"]["topic"] == topic
            assert (
                trigger["metadata"]["bootstrapServers"] == config["PREQUAL_KAFKA_BOOTSTRAP_SERVERS"]
            )
        else:
            assert target in autoscalers, f"{worker} has neither a ScaledObject nor an HPA"
            assert (
                autoscalers[target]["spec"]["scaleTargetRef"]["kind"] == workloads[worker]["kind"]
            )
            (metric,) = autoscalers[target]["spec"]["metrics"]
            assert metric["external"]["metric"]["name"] == "prequal_consumer_lag"
            # prequal_consumer_lag's consumer label is the process's name (LagReporter).
            assert metric["external"]["metric"]["selector"]["matchLabels"] == {
                "consumer": worker,
                "topic": topic,
            }


def test_the_migration_and_topic_jobs_and_the_ops_cli_use_the_same_settings(
    rendered: list[Manifest],
) -> None:
    commands = {}
    for name, spec in _pod_specs(rendered):
        (container,) = spec["containers"]
        commands[name] = container.get("command", []) + container.get("args", [])
        refs = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
        assert refs == [_of_kind(rendered, "ConfigMap")[0]["metadata"]["name"]], name
    flat = [" ".join(c) for c in commands.values()]
    assert "prequal-migrate upgrade head" in flat
    assert "prequal-ops topics create" in flat
    assert any(c.startswith("prequal-ops ") for c in flat if c != "prequal-ops topics create")
