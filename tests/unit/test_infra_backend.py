"""The suite's servers backend: chosen once from PREQUAL_TEST_INFRA, the compose file's images.

No Docker and no servers here: Docker's answer, the containers, infra/local.sh and the
readiness check are all stand-ins, so what is checked is the selection and the wiring
(which images, which ports reach Settings, which readiness check, what is stopped).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from runtime.settings import Settings
from tests.support import backends, infra
from tests.support.backends import (
    COMPOSE_FILE,
    ComposeServers,
    ContainerBackend,
    InfraSelectionError,
    KafkaSpec,
    LocalBackend,
    PostgresSpec,
    Selection,
    choose_backend,
    compose_servers,
    kafka_container_environment,
    kafka_starter,
    make_backend,
    report_header,
    running_ports,
    select_backend,
    suite_infra_dir,
    wait_until_ready,
)


class DockerAnswers:
    """A stand-in for "does a Docker engine answer?" that counts how often it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answer


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("env", "docker_answers", "expected"),
    [
        ({}, True, "containers"),
        ({}, False, "local"),
        ({"PREQUAL_TEST_INFRA": "auto"}, True, "containers"),
        ({"PREQUAL_TEST_INFRA": "auto"}, False, "local"),
        ({"PREQUAL_TEST_INFRA": ""}, False, "local"),
        ({"PREQUAL_TEST_INFRA": "local"}, True, "local"),
        ({"PREQUAL_TEST_INFRA": "local"}, False, "local"),
        ({"PREQUAL_TEST_INFRA": "containers"}, True, "containers"),
        ({"PREQUAL_TEST_INFRA": " Containers "}, True, "containers"),
    ],
)
def test_the_backend_follows_the_setting_and_whether_docker_answers(
    env: dict[str, str], docker_answers: bool, expected: str
) -> None:
    assert choose_backend(env, DockerAnswers(docker_answers)) == expected


def test_an_explicit_local_backend_does_not_ask_docker() -> None:
    ask = DockerAnswers(True)

    selection = select_backend({"PREQUAL_TEST_INFRA": "local"}, ask)

    assert selection == Selection("local", "local", None)
    assert ask.calls == 0


def test_auto_asks_docker_once() -> None:
    ask = DockerAnswers(False)

    assert select_backend({}, ask) == Selection("local", "auto", False)
    assert ask.calls == 1


def test_containers_without_docker_is_an_error_naming_the_way_out() -> None:
    with pytest.raises(InfraSelectionError, match=r"no Docker engine.*PREQUAL_TEST_INFRA=local"):
        choose_backend({"PREQUAL_TEST_INFRA": "containers"}, DockerAnswers(False))


@pytest.mark.parametrize("value", ["docker", "testcontainers", "remote", "local,containers"])
def test_an_unknown_value_is_an_error_listing_the_choices(value: str) -> None:
    ask = DockerAnswers(True)

    with pytest.raises(InfraSelectionError, match=r"auto, local, containers"):
        choose_backend({"PREQUAL_TEST_INFRA": value}, ask)
    assert ask.calls == 0


def test_the_header_names_the_backend_the_setting_and_docker() -> None:
    assert report_header(Selection("local", "auto", False))[0] == (
        "prequal infra backend: local (PREQUAL_TEST_INFRA=auto, no Docker engine)"
    )
    assert report_header(Selection("local", "local", None))[0] == (
        "prequal infra backend: local (PREQUAL_TEST_INFRA=local)"
    )


def test_the_header_of_a_local_run_says_the_servers_are_the_sessions_own() -> None:
    lines = report_header(Selection("local", "local", None))

    assert lines[1].startswith("prequal infra: servers of this session's own in a slot of ")
    assert "free ports" in lines[1]


def test_the_header_of_a_container_run_says_which_tests_need_the_local_servers() -> None:
    lines = report_header(Selection("containers", "auto", True))

    assert lines[0] == (
        "prequal infra backend: containers (PREQUAL_TEST_INFRA=auto, Docker engine answers)"
    )
    assert "CDC" in lines[1]
    assert "PREQUAL_TEST_INFRA=local" in lines[1]


def test_this_runs_header_is_the_one_its_selection_gives(pytestconfig: pytest.Config) -> None:
    from tests.conftest import INFRA

    selection = pytestconfig.stash[INFRA]

    header = pytestconfig.hook.pytest_report_header(
        config=pytestconfig, start_path=pytestconfig.rootpath
    )
    assert report_header(selection) in header


def test_infra_settings_are_not_settings_fields() -> None:
    # PREQUAL_TEST_* reach Settings (same prefix); they must stay ignored there.
    names = {"test_infra", "test_database", "test_keep_servers"}
    assert not names & set(Settings.model_fields)
    assert Settings.model_config.get("extra") == "ignore"


# ------------------------------------------------------------------------------- images


def compose_images() -> dict[str, str]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {name: services[name]["image"] for name in ("postgres", "kafka")}


class FakeContainer:
    """A container stand-in: records its spec and lifecycle, answers on a made-up port."""

    def __init__(self, spec: PostgresSpec | KafkaSpec, port: int, log: list[str]) -> None:
        self.spec = spec
        self.port = port
        self.log = log
        self.kind = "postgres" if isinstance(spec, PostgresSpec) else "kafka"

    def start(self) -> None:
        self.log.append(f"start {self.kind}")

    def address(self) -> tuple[str, int]:
        return "docker.example", self.port

    def stop(self) -> None:
        self.log.append(f"stop {self.kind}")


class Fakes:
    """Container factories and a readiness check that only record what they are given."""

    def __init__(self, fail_readiness: bool = False) -> None:
        self.log: list[str] = []
        self.containers: list[FakeContainer] = []
        self.ready_for: list[Settings] = []
        self.fail_readiness = fail_readiness

    def postgres(self, spec: PostgresSpec) -> FakeContainer:
        self.containers.append(FakeContainer(spec, 32801, self.log))
        return self.containers[-1]

    def kafka(self, spec: KafkaSpec) -> FakeContainer:
        self.containers.append(FakeContainer(spec, 32802, self.log))
        return self.containers[-1]

    def readiness(self, settings: Settings) -> None:
        self.log.append("readiness")
        self.ready_for.append(settings)
        if self.fail_readiness:
            raise TimeoutError("not ready")

    def backend(self, servers: ComposeServers | None = None) -> ContainerBackend:
        return ContainerBackend(
            servers=servers,
            postgres_container=self.postgres,
            kafka_container=self.kafka,
            readiness=self.readiness,
        )


def test_the_container_backend_starts_the_compose_files_images() -> None:
    fakes = Fakes()

    fakes.backend().start()

    assert {c.kind: c.spec.image for c in fakes.containers} == compose_images()


def test_postgres_gets_the_compose_files_logical_decoding_command_and_credentials() -> None:
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["postgres"]

    spec = compose_servers().postgres

    assert list(spec.command) == service["command"]
    assert "wal_level=logical" in spec.command
    env = service["environment"]
    assert (spec.user, spec.password, spec.database) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )


def test_a_compose_file_with_other_images_moves_the_backend_with_it(tmp_path: Path) -> None:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["postgres"]["image"] = "postgres:16"
    data["services"]["postgres"]["command"] = "postgres -c wal_level=logical"
    data["services"]["kafka"]["image"] = "apache/kafka:9.9.9"
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(yaml.safe_dump(data))
    fakes = Fakes()

    fakes.backend(compose_servers(compose)).start()

    assert [c.spec.image for c in fakes.containers] == ["postgres:16", "apache/kafka:9.9.9"]
    postgres = fakes.containers[0].spec
    assert isinstance(postgres, PostgresSpec)
    assert postgres.command == ("postgres", "-c", "wal_level=logical")


def test_a_kafka_image_other_than_apache_kafka_is_refused() -> None:
    servers = compose_servers()
    other = ComposeServers(servers.postgres, KafkaSpec("confluentinc/cp-kafka:8.0.0", {}))

    with pytest.raises(ValueError, match="apache/kafka"):
        ContainerBackend(servers=other)


def test_the_kafka_container_keeps_the_compose_environment_but_listens_for_the_host() -> None:
    spec = compose_servers().kafka

    env = kafka_container_environment(spec)

    assert env["CLUSTER_ID"] == spec.environment["CLUSTER_ID"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert "KAFKA_ADVERTISED_LISTENERS" not in env  # set by the start script
    assert "kafka:" not in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]  # no compose network here
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "BROKER"
    script = kafka_starter("docker.example", 32802)
    assert 'KAFKA_ADVERTISED_LISTENERS="PLAINTEXT://docker.example:32802,' in script
    assert script.rstrip().endswith("exec /etc/kafka/docker/run")


# ---------------------------------------------------------------------------- the wiring


def test_the_container_backends_ports_become_the_settings_of_the_run() -> None:
    fakes = Fakes()

    overrides = fakes.backend().start()

    settings = Settings(**overrides)
    assert (settings.pg_host, settings.pg_port) == ("docker.example", 32801)
    assert settings.kafka_bootstrap_servers == "docker.example:32802"
    assert settings.pg_user == compose_servers().postgres.user
    assert fakes.ready_for == [settings]
    assert fakes.log == ["start postgres", "start kafka", "readiness"]


def test_the_container_backend_removes_its_containers_last_first() -> None:
    fakes = Fakes()
    backend = fakes.backend()
    backend.start()

    backend.stop()
    backend.stop()  # a second stop has nothing left to do

    assert fakes.log[-2:] == ["stop kafka", "stop postgres"]


def test_containers_that_never_get_ready_are_removed_at_once() -> None:
    fakes = Fakes(fail_readiness=True)

    with pytest.raises(TimeoutError):
        fakes.backend().start()

    assert fakes.log[-2:] == ["stop kafka", "stop postgres"]


class FakeLocalSh:
    """infra/local.sh as the local backend uses it, on one infra dir: status, up, down.

    ``running`` maps each running service to its port; ``up`` starts postgres and kafka
    on the ports its environment names, as the script does.
    """

    def __init__(self, running: dict[str, int] | None = None, fail_up: bool = False) -> None:
        self.running = dict(running or {})
        self.fail_up = fail_up
        self.calls: list[tuple[str, ...]] = []
        self.envs: list[Mapping[str, str]] = []

    def run(self, env: Mapping[str, str], *args: str) -> str:
        self.calls.append(args)
        self.envs.append(dict(env))
        if args == ("status",):
            return "".join(
                (
                    f"{name}: running (pid 4242, port {self.running[name]})\n"
                    if name in self.running
                    else f"{name}: stopped\n"
                )
                for name in ("postgres", "kafka", "connect")
            )
        if args == ("up",):
            if self.fail_up:
                raise RuntimeError("infra/local.sh up failed (1): port in use")
            ports = {"postgres": "PREQUAL_PG_PORT", "kafka": "PREQUAL_KAFKA_PORT"}
            for name, variable in ports.items():
                self.running.setdefault(name, int(env[variable]))
        if args[:1] == ("down",):
            for name in args[1:] or ("postgres", "kafka", "connect"):
                self.running.pop(name, None)
        return ""


FREE = [41001, 41002, 41003, 41004]  # pg, kafka, kafka controller, connect


def local_backend(
    sh: FakeLocalSh,
    suite_dir: Path,
    environ: dict[str, str] | None = None,
    fakes: Fakes | None = None,
    env: Mapping[str, str] | None = None,
) -> LocalBackend:
    """A local backend on ``sh``, its slots in ``suite_dir``, free ports ``FREE``."""
    return LocalBackend(
        env={"PREQUAL_TEST_INFRA_DIR": str(suite_dir), **(env or {})},
        environ={} if environ is None else environ,
        run=sh.run,
        ports=lambda count: FREE[:count],
        readiness=(fakes or Fakes()).readiness,
        slot_wait_s=0,
    )


def test_the_suites_servers_live_in_a_directory_of_their_own() -> None:
    assert suite_infra_dir({}) == infra.ROOT / ".infra" / "suite"
    assert suite_infra_dir({"PREQUAL_INFRA_DIR": "/srv/prequal"}) == Path("/srv/prequal/suite")
    assert suite_infra_dir({"PREQUAL_TEST_INFRA_DIR": "/work/own"}) == Path("/work/own")


def test_the_local_backend_starts_its_servers_on_free_ports_never_the_defaults(
    tmp_path: Path,
) -> None:
    sh, fakes = FakeLocalSh(), Fakes()
    backend = local_backend(sh, tmp_path, fakes=fakes)

    overrides = backend.start()

    assert overrides == {
        "pg_host": "127.0.0.1",
        "pg_port": 41001,
        "kafka_bootstrap_servers": "127.0.0.1:41002",
        "connect_url": "http://127.0.0.1:41004",
    }
    assert sh.calls == [("status",), ("up",)]
    up_env = sh.envs[1]
    assert up_env["PREQUAL_INFRA_DIR"] == str(tmp_path / "1")
    assert [up_env[f"PREQUAL_{name}_PORT"] for name in ("PG", "KAFKA", "CONNECT")] == [
        "41001",
        "41002",
        "41004",
    ]
    assert up_env["PREQUAL_KAFKA_CONTROLLER_PORT"] == "41003"
    assert fakes.ready_for == [Settings(**overrides)]
    backend.stop()


def test_every_infra_script_of_the_session_acts_on_the_suites_servers_until_the_end(
    tmp_path: Path,
) -> None:
    environ = {"PREQUAL_INFRA_DIR": "/srv/running-system", "PREQUAL_PG_PORT": "55432"}
    backend = local_backend(FakeLocalSh(), tmp_path, environ=environ)

    backend.start()
    # What tests.support.infra.local hands to infra/local.sh (the outage tests' down kafka).
    assert environ["PREQUAL_INFRA_DIR"] == str(tmp_path / "1")
    assert environ["PREQUAL_PG_PORT"] == "41001"
    assert environ["PREQUAL_KAFKA_PORT"] == "41002"
    assert environ["PREQUAL_CONNECT_PORT"] == "41004"
    backend.stop()

    assert environ == {"PREQUAL_INFRA_DIR": "/srv/running-system", "PREQUAL_PG_PORT": "55432"}


def test_servers_running_in_the_suites_directory_are_reused_on_their_ports(
    tmp_path: Path,
) -> None:
    sh = FakeLocalSh({"postgres": 45001, "kafka": 45002, "connect": 45004})
    backend = local_backend(sh, tmp_path)

    overrides = backend.start()
    backend.stop()

    assert (overrides["pg_port"], overrides["kafka_bootstrap_servers"]) == (
        45001,
        "127.0.0.1:45002",
    )
    assert overrides["connect_url"] == "http://127.0.0.1:45004"
    assert sh.calls == [("status",), ("up",)]  # nothing stopped: this session started nothing


@pytest.mark.parametrize(
    ("already", "env", "stopped"),
    [
        ({}, {}, [("down",)]),
        ({"postgres": 45001}, {}, [("down", "kafka")]),
        ({"postgres": 45001, "kafka": 45002}, {}, []),
        ({}, {"PREQUAL_TEST_KEEP_SERVERS": "1"}, []),
    ],
)
def test_the_local_backend_stops_only_what_it_started(
    tmp_path: Path, already: dict[str, int], env: dict[str, str], stopped: list[tuple[str, ...]]
) -> None:
    sh = FakeLocalSh(already)
    backend = local_backend(sh, tmp_path, env=env)

    backend.start()
    backend.stop()
    backend.stop()  # idempotent, as session teardown may be

    assert sh.calls == [("status",), ("up",), *stopped]


def test_a_concurrent_session_gets_servers_of_its_own_in_the_next_slot(tmp_path: Path) -> None:
    first_sh, second_sh = FakeLocalSh(), FakeLocalSh()
    first, second = local_backend(first_sh, tmp_path), local_backend(second_sh, tmp_path)

    first.start()
    second.start()
    first.stop()

    assert first_sh.envs[1]["PREQUAL_INFRA_DIR"] == str(tmp_path / "1")
    assert second_sh.envs[1]["PREQUAL_INFRA_DIR"] == str(tmp_path / "2")
    assert second_sh.calls == [("status",), ("up",)]  # the first's stop left it alone
    second.stop()
    assert second_sh.calls[-1] == ("down",)


def test_a_slot_is_free_again_once_its_session_ended(tmp_path: Path) -> None:
    first = local_backend(FakeLocalSh(), tmp_path)
    first.start()
    first.stop()
    sh = FakeLocalSh()
    later = local_backend(sh, tmp_path)

    later.start()
    later.stop()

    assert sh.envs[0]["PREQUAL_INFRA_DIR"] == str(tmp_path / "1")


def test_with_every_slot_taken_a_session_gives_up_saying_so(tmp_path: Path) -> None:
    holders = [backends.claim_slot(tmp_path, slots=2, wait_s=0) for _ in range(2)]
    try:
        with pytest.raises(TimeoutError, match="all 2 server slots"):
            backends.claim_slot(tmp_path, slots=2, wait_s=0)
    finally:
        for _, lock in holders:
            lock.close()


def test_servers_an_interrupted_session_started_are_stopped_by_the_next_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / backends.STARTED_FILE).write_text("kafka\npostgres\n")
    sh = FakeLocalSh({"postgres": 45001, "kafka": 45002})
    backend = local_backend(sh, tmp_path)

    backend.start()
    backend.stop()

    assert sh.calls == [("status",), ("up",), ("down",)]


def test_servers_that_fail_to_start_are_stopped_and_leave_the_slot_and_environment_as_they_were(
    tmp_path: Path,
) -> None:
    environ = {"PREQUAL_PG_PORT": "55432"}
    failing_sh = FakeLocalSh(fail_up=True)
    failing = local_backend(failing_sh, tmp_path, environ=environ)

    with pytest.raises(RuntimeError, match="port in use"):
        failing.start()

    assert failing_sh.calls == [("status",), ("up",), ("down",)]  # what up may have started
    assert environ == {"PREQUAL_PG_PORT": "55432"}
    sh = FakeLocalSh()
    later = local_backend(sh, tmp_path)
    later.start()
    later.stop()
    assert sh.envs[0]["PREQUAL_INFRA_DIR"] == str(tmp_path / "1")  # the failed one freed it


def test_status_lines_give_the_port_of_each_running_service() -> None:
    status = (
        "postgres: running (pid 10, port 45001)\n"
        "kafka: running (pid 11, port 45002) but not answering yet\n"
        "connect: stopped\n"
    )

    assert running_ports(status) == {"postgres": 45001, "kafka": 45002}


def test_both_backends_wait_on_the_same_readiness_check() -> None:
    assert LocalBackend().readiness is wait_until_ready
    assert ContainerBackend().readiness is wait_until_ready


def test_readiness_waits_for_every_check_and_names_those_still_failing() -> None:
    from confluent_kafka import KafkaError, KafkaException

    attempts = {"postgres": 0, "kafka": 0}

    def postgres() -> None:
        attempts["postgres"] += 1
        if attempts["postgres"] < 3:
            raise OSError("connection refused")

    def kafka() -> None:
        attempts["kafka"] += 1
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    with pytest.raises(TimeoutError, match=r"kafka: KafkaException") as raised:
        wait_until_ready(
            Settings(),
            timeout_s=0.2,
            interval_s=0.01,
            checks=lambda _: {"postgres": postgres, "kafka": kafka},
        )
    assert "postgres" not in str(raised.value)
    assert attempts["postgres"] == 3  # retried until it answered, then left alone


def test_readiness_uses_the_processes_health_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(backends, "database_check", lambda s: lambda: seen.append(s.pg_host))
    monkeypatch.setattr(
        backends, "kafka_check", lambda s: lambda: seen.append(s.kafka_bootstrap_servers)
    )

    wait_until_ready(Settings(pg_host="db.example", kafka_bootstrap_servers="k.example:1"))

    assert sorted(seen) == ["db.example", "k.example:1"]


def test_backends_are_made_by_name() -> None:
    assert isinstance(make_backend("local"), LocalBackend)
    assert make_backend("containers").name == "containers"


def test_a_refused_local_script_fails_with_the_reason_without_running() -> None:
    previous = infra.refuse_local_script("the servers are containers")
    try:
        with pytest.raises(infra.LocalScriptRefused, match=r"down kafka: the servers are"):
            infra.local("down", "kafka")
    finally:
        infra.refuse_local_script(previous)
