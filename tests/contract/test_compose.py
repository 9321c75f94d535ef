"""docker-compose.yml runs the same system as ``make run``, wired by the project's own names.

Every prequal service runs a console script of pyproject.toml, listens and is health-checked
on its Settings default port, and is configured only through real ``PREQUAL_*`` settings;
startup order is expressed with depends_on conditions; the ``cdc`` profile registers the
repository's Debezium connector config (infra/debezium) rather than a copy of it, and its
Connect worker resolves the database password from its environment, so the registered
config holds a reference, never the password; the ``monitoring`` profile adds Grafana
and Jaeger, to which every process sends its traces once ``OTEL_TRACES_EXPORTER=otlp``
turns them on (off by default).

No container engine is needed: the file is read as YAML, and Compose v1.29 (Debian's
``docker-compose`` package) validates it with ``config``, which never contacts an engine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from runtime.settings import RelayKind, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEBEZIUM_DIR = ROOT / "infra" / "debezium"

#: Each long-running process, named as its console script and its compose service, and the
#: Settings field holding the port of its /health and /metrics.
PROCESS_PORT_FIELDS = {
    "command-api": "command_api_port",
    "query-api": "query_api_port",
    "credit-worker": "credit_worker_metrics_port",
    "decision-worker": "decision_worker_metrics_port",
    "query-projector": "projector_metrics_port",
    "outbox-relay": "relay_metrics_port",
}
#: Processes that read or write PostgreSQL (the credit worker only talks to Kafka).
USES_DATABASE = {"command-api", "query-api", "decision-worker", "query-projector", "outbox-relay"}
#: Processes that consume or produce Kafka topics.
USES_KAFKA = {"credit-worker", "decision-worker", "query-projector", "outbox-relay"}
COMPOSE_BINARY = "docker-compose"
COMPOSE_PACKAGE = "docker-compose"  # Debian's package (Compose v1.29)


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as data (YAML anchors and merge keys resolved)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def console_scripts() -> set[str]:
    """The console scripts pyproject.toml declares."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["tool"]["poetry"]["scripts"])


def default_port(process: str) -> int:
    """The Settings default of ``process``'s port."""
    default = Settings.model_fields[PROCESS_PORT_FIELDS[process]].default
    assert isinstance(default, int)
    return default


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever Compose syntax it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def unset(env: dict[str, str]) -> dict[str, str]:
    """``env`` as Compose resolves it with no variable set: each ``${NAME:-default}`` -> default."""
    return {key: re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    """A service's command as a list of words."""
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(word) for word in cmd]


def prequal_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports of a service's published ``ports``."""
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def healthcheck_ports(service: dict[str, Any]) -> set[int]:
    """Ports the service's healthcheck asks for /readyz (it gates depends_on: readiness)."""
    test = service.get("healthcheck", {}).get("test", [])
    text = test if isinstance(test, str) else " ".join(test)
    return {int(port) for port in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)/readyz", text)}


def run_compose(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    env_file_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run Compose v1 on docker-compose.yml with ``env_file_path`` (default: an empty one).

    Never with the working tree's .env, whose settings are a developer's own.
    """
    if env_file_path is None:
        env_file_path = tmp_path / "empty.env"
        env_file_path.touch()
    binary = shutil.which(COMPOSE_BINARY)
    assert binary is not None, (
        f"{COMPOSE_BINARY} is not installed: apt-get install -y {COMPOSE_PACKAGE} "
        "(validating the file needs no container engine)"
    )
    # The suite's own servers put PREQUAL_* (PREQUAL_KAFKA_BROKERS=1, ports...) into this
    # process's environment, and Compose lets the environment override the env file:
    # the file is checked as a user would run it, with ``env`` and the env file only.
    base = {key: value for key, value in os.environ.items() if not key.startswith("PREQUAL_")}
    return subprocess.run(
        [binary, "--env-file", str(env_file_path), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ----------------------------------------------------------------------------- processes


def test_each_of_the_six_processes_runs_in_its_own_service_named_after_it() -> None:
    services = load_compose()["services"]

    for process in PROCESS_PORT_FIELDS:
        assert process in services, f"no compose service {process!r}"
        assert command(services[process])[0] == process


def test_every_prequal_service_runs_a_console_script_declared_in_pyproject() -> None:
    scripts = console_scripts()
    services = prequal_services(load_compose())

    assert {"migrate", "topics", *PROCESS_PORT_FIELDS} <= set(services)
    for name, service in services.items():
        assert command(service), f"{name} has no command"
        assert command(service)[0] in scripts, f"{name} runs {command(service)[0]!r}"


def test_the_one_shot_jobs_migrate_the_database_and_create_the_topics() -> None:
    services = load_compose()["services"]

    assert command(services["migrate"]) == ["prequal-migrate", "upgrade", "head"]
    assert command(services["topics"]) == ["prequal-ops", "topics", "create"]
    for job in ("migrate", "topics"):
        assert "restart" not in services[job], f"{job} must run once, not be restarted"


def test_published_and_healthchecked_ports_are_the_settings_defaults() -> None:
    services = load_compose()["services"]

    for process in PROCESS_PORT_FIELDS:
        port = default_port(process)
        assert container_ports(services[process]) == {port}, process
        assert healthcheck_ports(services[process]) == {port}, process


def test_published_ports_listen_on_the_loopback_interface_only() -> None:
    for name, service in load_compose()["services"].items():
        for entry in service.get("ports", []):
            assert str(entry).startswith("127.0.0.1:"), f"{name} publishes {entry!r} widely"


def test_every_process_healthcheck_asks_health_with_the_python_standard_library() -> None:
    services = load_compose()["services"]

    for process in PROCESS_PORT_FIELDS:
        test = services[process]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], process
        assert "urllib.request" in test[3], process


def test_every_prequal_environment_variable_is_a_settings_field() -> None:
    fields = set(Settings.model_fields)

    for name, service in load_compose()["services"].items():
        for variable in environment(service):
            if variable.startswith("PREQUAL_"):
                field = variable.removeprefix("PREQUAL_").lower()
                assert field in fields, f"{name}: {variable} is not a Settings field"


def test_the_processes_listen_on_every_interface_and_reach_the_servers_by_service_name() -> None:
    compose = load_compose()
    services = compose["services"]
    postgres = environment(services["postgres"])
    advertised = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]

    for name, service in prequal_services(compose).items():
        env = unset(environment(service))
        assert env["PREQUAL_HTTP_HOST"] == "0.0.0.0", name  # noqa: S104 - containers
        assert env["PREQUAL_PG_HOST"] == "postgres", name
        assert env["PREQUAL_PG_PORT"] == "5432", name
        assert env["PREQUAL_PG_USER"] == postgres["POSTGRES_USER"], name
        assert env["PREQUAL_PG_PASSWORD"] == postgres["POSTGRES_PASSWORD"], name
        assert env["PREQUAL_PG_DATABASE"] == postgres["POSTGRES_DB"], name
        assert f"://{env['PREQUAL_KAFKA_BOOTSTRAP_SERVERS']}" in advertised, name


def test_the_query_api_base_url_points_at_the_published_query_api_port() -> None:
    env = environment(load_compose()["services"]["command-api"])

    assert env["PREQUAL_QUERY_API_BASE_URL"] == f"http://localhost:{default_port('query-api')}"


# ------------------------------------------------------------------------- startup order


def conditions(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition}; the short list form has no conditions."""
    depends = service.get("depends_on", {})
    assert isinstance(depends, dict), "depends_on must use the long form with conditions"
    return {name: spec["condition"] for name, spec in depends.items()}


def test_the_one_shot_jobs_wait_for_healthy_servers() -> None:
    services = load_compose()["services"]

    assert conditions(services["migrate"]) == {"postgres": "service_healthy"}
    assert conditions(services["topics"]) == {"kafka": "service_healthy"}


def test_each_process_waits_for_the_migrations_and_topics_it_needs() -> None:
    services = load_compose()["services"]

    for process in PROCESS_PORT_FIELDS:
        expected = {}
        if process in USES_DATABASE:
            expected["migrate"] = "service_completed_successfully"
        if process in USES_KAFKA:
            expected["topics"] = "service_completed_successfully"
        assert conditions(services[process]) == expected, process


def test_every_depends_on_names_a_condition_compose_knows() -> None:
    known = {"service_started", "service_healthy", "service_completed_successfully"}

    for name, service in load_compose()["services"].items():
        for dependency, condition in conditions(service).items():
            assert condition in known, f"{name} -> {dependency}: {condition}"


def test_every_server_and_process_has_a_healthcheck_and_the_jobs_have_none() -> None:
    services = load_compose()["services"]

    servers = ("postgres", "kafka", "connect", "prometheus", "grafana", "jaeger")
    for name in (*servers, *PROCESS_PORT_FIELDS):
        assert services[name]["healthcheck"].get("test"), f"{name} has no healthcheck"
    for job in ("migrate", "topics", "connect-register"):
        assert services[job]["healthcheck"] == {"disable": True}, job


# ------------------------------------------------------------------------------- servers


def test_postgres_15_runs_with_logical_wal_level_for_debezium() -> None:
    postgres = load_compose()["services"]["postgres"]

    assert postgres["image"].startswith("postgres:15")
    words = command(postgres)
    assert words[0] == "postgres"
    assert "wal_level=logical" in words
    assert words[words.index("wal_level=logical") - 1] == "-c"


def test_kafka_runs_one_kraft_node_reachable_at_kafka_9092() -> None:
    kafka = load_compose()["services"]["kafka"]
    env = unset(environment(kafka))  # without the cluster's env file

    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    for single_node in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[single_node] == "1", single_node
    # KRaft cluster ids are 16 bytes, base64url without padding.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])


def pom_version(pom: Path, prop: str) -> str:
    """A ``<prop>`` property of a pom.xml."""
    match = re.search(rf"<{re.escape(prop)}>([^<]+)</{re.escape(prop)}>", pom.read_text())
    assert match is not None, f"{pom} has no <{prop}>"
    return match.group(1)


def test_the_images_run_the_same_kafka_and_debezium_versions_as_make_run() -> None:
    services = load_compose()["services"]
    kafka = pom_version(ROOT / "infra" / "kafka" / "pom.xml", "kafka.version")
    debezium = pom_version(DEBEZIUM_DIR / "pom.xml", "debezium.version")

    assert services["kafka"]["image"] == f"apache/kafka:{kafka}"
    assert services["connect"]["image"] == f"quay.io/debezium/connect:{debezium}"


# --------------------------------------------------------------------------- cdc profile


def test_the_cdc_profile_holds_kafka_connect_and_the_connector_registration_only() -> None:
    services = load_compose()["services"]
    in_cdc = {name for name, svc in services.items() if "cdc" in svc.get("profiles", [])}
    without_profile = {name for name, svc in services.items() if not svc.get("profiles")}

    assert in_cdc == {"connect", "connect-register"}
    assert {"postgres", "kafka", "migrate", "topics", "prometheus"} <= without_profile
    assert set(PROCESS_PORT_FIELDS) <= without_profile


def test_the_connector_is_registered_by_the_repositorys_register_script_and_template() -> None:
    services = load_compose()["services"]
    register = services["connect-register"]
    mounts = dict(str(volume).split(":")[:2] for volume in register["volumes"])
    mounted_at = mounts["./infra/debezium"]

    assert register["entrypoint"] == ["bash", f"{mounted_at}/register.sh"]
    assert command(register) == ["http://connect:8083"]
    assert conditions(register) == {
        "connect": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    # The config is the template's, never a fork of it inside the compose file.
    assert "io.debezium" not in COMPOSE_FILE.read_text()


def render_connector(env: dict[str, str]) -> dict[str, Any]:
    """infra/debezium/outbox-connector.json rendered by render.sh with ``env``."""
    rendered = subprocess.run(
        ["bash", str(DEBEZIUM_DIR / "render.sh"), str(DEBEZIUM_DIR / "outbox-connector.json")],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    data = yaml.safe_load(rendered)  # JSON is YAML; one parser for both files
    assert isinstance(data, dict)
    return data


#: What the connector config holds instead of the database password (KIP-297/KIP-887).
PASSWORD_REFERENCE = "${env:PREQUAL_PG_PASSWORD}"
ENV_PROVIDER = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"


def test_the_connector_template_holds_a_reference_to_the_password_never_the_password() -> None:
    register = environment(load_compose()["services"]["connect-register"])
    password = "n0t-in-the-config"  # a marker to search for, not a credential

    config = render_connector({**register, "PREQUAL_PG_PASSWORD": password})["config"]

    assert config["database.password"] == PASSWORD_REFERENCE
    assert password not in str(config)
    # register.sh renders and sends no password: the job is not given one.
    assert "PREQUAL_PG_PASSWORD" not in register


def test_render_refuses_a_template_that_would_render_the_password(tmp_path: Path) -> None:
    template = tmp_path / "leaky-connector.json"
    template.write_text(
        '{"name": "leaky", "config": {"database.password": "${PREQUAL_PG_PASSWORD}"}}'
    )

    result = subprocess.run(
        ["bash", str(DEBEZIUM_DIR / "render.sh"), str(template)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PREQUAL_PG_PASSWORD": "secret"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode != 0
    assert "secret" not in result.stdout
    assert PASSWORD_REFERENCE in result.stderr


def worker_properties(path: Path) -> dict[str, str]:
    """A Java properties file's ``key=value`` lines (the simple form the repository uses)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_the_compose_connect_worker_resolves_env_references_to_the_database_password() -> None:
    services = load_compose()["services"]
    env = environment(services["connect"])
    # The Debezium image turns CONNECT_A_B into the worker property a.b.
    properties = {
        key.removeprefix("CONNECT_").lower().replace("_", "."): value
        for key, value in env.items()
        if key.startswith("CONNECT_")
    }

    assert properties["config.providers"] == "env"
    assert properties["config.providers.env.class"] == ENV_PROVIDER
    assert re.fullmatch(
        properties["config.providers.env.param.allowlist.pattern"], "PREQUAL_PG_PASSWORD"
    )
    assert env["PREQUAL_PG_PASSWORD"] == environment(services["postgres"])["POSTGRES_PASSWORD"]


def test_the_standalone_connect_worker_resolves_env_references_to_the_database_password() -> None:
    properties = worker_properties(DEBEZIUM_DIR / "connect-standalone.properties")

    assert properties["config.providers"] == "env"
    assert properties["config.providers.env.class"] == ENV_PROVIDER
    pattern = properties["config.providers.env.param.allowlist.pattern"]
    assert re.fullmatch(pattern, "PREQUAL_PG_PASSWORD")
    assert not re.fullmatch(pattern, "PREQUAL_PG_USER"), "the allowlist lets other variables out"


def test_the_registered_connector_reads_the_compose_database_under_the_relays_names() -> None:
    register = environment(load_compose()["services"]["connect-register"])
    defaults = Settings.model_fields

    connector = render_connector(register)
    config = connector["config"]

    assert connector["name"] == defaults["debezium_connector"].default
    assert config["database.hostname"] == "postgres"
    assert config["database.port"] == "5432"
    assert config["database.user"] == register["PREQUAL_PG_USER"]
    assert config["database.dbname"] == register["PREQUAL_PG_DATABASE"]
    # The relay (default settings) checks this slot, publication and connector.
    assert config["slot.name"] == defaults["debezium_slot"].default
    assert config["publication.name"] == defaults["debezium_publication"].default


def test_the_relay_switches_to_debezium_through_prequal_relay_defaulting_to_polling() -> None:
    services = load_compose()["services"]
    relay = environment(services["outbox-relay"])
    connect_port = container_ports(services["connect"])

    assert relay["PREQUAL_RELAY"] == "${PREQUAL_RELAY:-polling}"
    assert {kind.value for kind in RelayKind} == {"polling", "debezium"}
    assert relay["PREQUAL_CONNECT_URL"] == "http://connect:8083"
    assert connect_port == {8083}


# ----------------------------------------------------------------------- cluster profile

CLUSTER_ENV_FILE = ROOT / "infra" / "kafka" / "compose-cluster.env"
CLUSTER_NODES = ("kafka", "kafka-2", "kafka-3")


def env_file(path: Path) -> dict[str, str]:
    """A Compose env file's NAME=value lines."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_cluster_profile_adds_two_kafka_nodes_only() -> None:
    services = load_compose()["services"]
    in_cluster = {name for name, svc in services.items() if "cluster" in svc.get("profiles", [])}

    assert in_cluster == {"kafka-2", "kafka-3"}
    assert not services["kafka"].get("profiles"), "node 1 is the default kafka service"
    for node in in_cluster:
        assert services[node]["image"] == services["kafka"]["image"], node


def test_the_cluster_env_file_turns_the_profile_on_and_chooses_three_brokers() -> None:
    env = env_file(CLUSTER_ENV_FILE)

    assert env["COMPOSE_PROFILES"] == "cluster"
    assert env["PREQUAL_KAFKA_BROKERS"] == "3"
    settings = Settings(
        kafka_brokers=3, kafka_bootstrap_servers=env["PREQUAL_KAFKA_BOOTSTRAP_SERVERS"]
    )
    assert settings.topic_replication_factor == 3
    assert settings.topic_min_insync_replicas == 2


def test_the_local_clusters_brokers_are_the_bootstrap_default_of_three_brokers() -> None:
    settings = Settings(kafka_brokers=3)

    assert settings.kafka_bootstrap_servers.split(",") == [
        "127.0.0.1:9092",
        "127.0.0.1:9094",
        "127.0.0.1:9096",
    ]
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)
    assert Settings().topic_replication_factor == 1, "one broker keeps one replica"


def test_with_the_cluster_env_file_three_nodes_form_one_quorum_and_replicate_thrice(
    tmp_path: Path,
) -> None:
    result = run_compose(tmp_path, "config", env_file_path=CLUSTER_ENV_FILE)

    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    nodes = {name: environment(services[name]) for name in CLUSTER_NODES}
    assert {env["KAFKA_NODE_ID"] for env in nodes.values()} == {"1", "2", "3"}
    assert len({env["CLUSTER_ID"] for env in nodes.values()}) == 1
    for name, env in nodes.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092", name
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
            "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
        ), name
        for replicated in (
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        ):
            assert env[replicated] == "3", (name, replicated)
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2", name
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert env["KAFKA_HEAP_OPTS"] == "-Xms384m -Xmx384m", name
    for name, service in prequal_services({"services": services}).items():
        env = environment(service)
        assert env["PREQUAL_KAFKA_BROKERS"] == "3", name
        assert env["PREQUAL_KAFKA_BOOTSTRAP_SERVERS"].split(",") == [
            f"{node}:9092" for node in CLUSTER_NODES
        ], name


def test_without_the_cluster_env_file_kafka_is_one_node_with_one_replica(
    tmp_path: Path,
) -> None:
    result = run_compose(tmp_path, "config")

    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    kafka = environment(services["kafka"])
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    for name, service in prequal_services({"services": services}).items():
        env = environment(service)
        assert env["PREQUAL_KAFKA_BROKERS"] == "1", name
        assert env["PREQUAL_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name


# -------------------------------------------------------------------- monitoring profile


def test_the_monitoring_profile_adds_grafana_and_jaeger_on_top_of_the_default_prometheus() -> None:
    services = load_compose()["services"]
    in_monitoring = {
        name for name, svc in services.items() if "monitoring" in svc.get("profiles", [])
    }

    assert in_monitoring == {"grafana", "jaeger"}
    assert not services["prometheus"].get("profiles"), "Prometheus runs without the profile"
    assert conditions(services["grafana"]) == {"prometheus": "service_healthy"}
    assert container_ports(services["grafana"]) == {3000}


#: The OTLP/HTTP receiver's port, and the port of Jaeger's UI.
OTLP_HTTP_PORT = 4318
JAEGER_UI_PORT = 16686


def test_jaeger_runs_all_in_one_with_its_otlp_http_receiver_and_ui_published() -> None:
    jaeger = load_compose()["services"]["jaeger"]

    assert jaeger["image"].startswith("jaegertracing/jaeger:2.")
    assert container_ports(jaeger) == {OTLP_HTTP_PORT, JAEGER_UI_PORT}
    assert environment(jaeger)["JAEGER_LISTEN_HOST"] == "0.0.0.0"  # noqa: S104 - containers
    assert "13133/status" in " ".join(jaeger["healthcheck"]["test"])


def test_every_process_traces_to_jaeger_only_once_otel_traces_exporter_turns_it_on() -> None:
    compose = load_compose()

    for name, service in prequal_services(compose).items():
        env = unset(environment(service))
        # Off by default: a process never exports to a backend nobody started.
        assert env["OTEL_TRACES_EXPORTER"] == "none", name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://jaeger:{OTLP_HTTP_PORT}", name
        # service.name is the process's own (runtime.tracing), never one for all.
        assert "OTEL_SERVICE_NAME" not in env, name
        # Tracing is never a reason not to start.
        assert "jaeger" not in conditions(service), name


def test_compose_hands_otel_traces_exporter_to_every_process(tmp_path: Path) -> None:
    result = run_compose(
        tmp_path, "--profile", "monitoring", "config", env={"OTEL_TRACES_EXPORTER": "otlp"}
    )

    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    for process in PROCESS_PORT_FIELDS:
        env = environment(resolved[process])
        assert env["OTEL_TRACES_EXPORTER"] == "otlp", process
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://jaeger:{OTLP_HTTP_PORT}", process


# ------------------------------------------------------------------- Compose validation


@pytest.mark.parametrize(
    "profile",
    [[], ["--profile", "cdc"], ["--profile", "monitoring"], ["--profile", "cluster"]],
    ids=["default", "cdc", "monitoring", "cluster"],
)
def test_compose_accepts_the_file(tmp_path: Path, profile: list[str]) -> None:
    result = run_compose(tmp_path, *profile, "config", "-q")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("relay", "expected"), [(None, "polling"), ("debezium", "debezium")], ids=["unset", "debezium"]
)
def test_compose_hands_prequal_relay_to_the_relay(
    tmp_path: Path, relay: str | None, expected: str
) -> None:
    result = run_compose(
        tmp_path, "--profile", "cdc", "config", env={"PREQUAL_RELAY": relay} if relay else None
    )

    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert environment(resolved["outbox-relay"])["PREQUAL_RELAY"] == expected
    assert RelayKind(expected)
