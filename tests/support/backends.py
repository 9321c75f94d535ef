"""Where the suite's PostgreSQL and Kafka come from: local servers, or containers.

One backend is chosen per run (:func:`select_backend`, from ``PREQUAL_TEST_INFRA``):

* ``local`` - the servers of ``infra/local.sh``, started when they do not run yet and
  stopped at the end only if this run started them (``PREQUAL_TEST_KEEP_SERVERS`` keeps
  them running).
* ``containers`` - throwaway testcontainers of the images docker-compose.yml names (read
  from the file, so the two cannot drift), on ports Docker maps; the Settings the suite
  uses point at those ports. ``PREQUAL_TEST_KEEP_SERVERS`` does not apply: the containers
  are removed at the end of the run (and by testcontainers' reaper if the run dies).
* ``auto`` (the default) - containers when a Docker engine answers, else local.

Both backends hand the servers to the same readiness check (:func:`wait_until_ready`,
built on the health checks the processes themselves use), so the container path is held
to the bar the local one passes every day.

Kafka Connect (the CDC tests) and the server-outage tests drive ``infra/local.sh`` and
therefore the local servers only; under the container backend ``infra/local.sh`` refuses
to run (:func:`tests.support.infra.refuse_local_script`), and those tests fail saying so.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
import yaml  # type: ignore[import-untyped]
from confluent_kafka import KafkaException

from runtime.health import database_check
from runtime.kafka import kafka_check
from runtime.settings import Settings
from tests.support.infra import ROOT, local, running_services

COMPOSE_FILE = ROOT / "docker-compose.yml"

INFRA_VARIABLE = "PREQUAL_TEST_INFRA"
KEEP_SERVERS_VARIABLE = "PREQUAL_TEST_KEEP_SERVERS"
AUTO, LOCAL, CONTAINERS = "auto", "local", "containers"
CHOICES = (AUTO, LOCAL, CONTAINERS)

#: Settings fields a backend sets so that the suite reaches its servers.
SettingsOverrides = dict[str, Any]
#: Waits until the servers ``settings`` point at answer; raises when they do not in time.
Readiness = Callable[[Settings], None]
Check = Callable[[], None]


# --------------------------------------------------------------------------- selection


class InfraSelectionError(ValueError):
    """``PREQUAL_TEST_INFRA`` asks for something this machine cannot give."""


@dataclass(frozen=True)
class Selection:
    """The backend of this run and why it was chosen."""

    backend: str  # LOCAL or CONTAINERS
    requested: str  # the value of PREQUAL_TEST_INFRA (AUTO when unset)
    docker: bool | None  # whether a Docker engine answered; None when it was not asked


def select_backend(env: Mapping[str, str], docker_available: Callable[[], bool]) -> Selection:
    """Which backend ``env`` asks for; Docker is asked only when the answer matters."""
    raw = env.get(INFRA_VARIABLE, "")
    requested = raw.strip().lower() or AUTO
    if requested not in CHOICES:
        raise InfraSelectionError(
            f"{INFRA_VARIABLE}={raw!r} is not one of {', '.join(CHOICES)} (default {AUTO})"
        )
    if requested == LOCAL:
        return Selection(LOCAL, requested, None)
    docker = docker_available()
    if requested == CONTAINERS and not docker:
        raise InfraSelectionError(
            f"{INFRA_VARIABLE}={CONTAINERS}, but no Docker engine answers (DOCKER_HOST, the"
            " Docker socket, the Docker context or ~/.testcontainers.properties); start one,"
            f" or use {INFRA_VARIABLE}={LOCAL} for the servers of infra/local.sh"
        )
    return Selection(CONTAINERS if docker else LOCAL, requested, docker)


def choose_backend(env: Mapping[str, str], docker_available: Callable[[], bool]) -> str:
    """The name of the backend ``env`` asks for: ``local`` or ``containers``."""
    return select_backend(env, docker_available).backend


def report_header(selection: Selection) -> list[str]:
    """The lines pytest prints in its header about the servers of this run."""
    why = f"{INFRA_VARIABLE}={selection.requested}"
    if selection.docker is not None:
        why += ", Docker engine answers" if selection.docker else ", no Docker engine"
    lines = [f"prequal infra backend: {selection.backend} ({why})"]
    if selection.backend == CONTAINERS:
        lines.append(
            "prequal infra: infra/local.sh is refused, so the Kafka Connect (CDC) and"
            f" server-outage tests fail; run them with {INFRA_VARIABLE}={LOCAL}"
        )
    return lines


def docker_answers(timeout_s: float = 2.0) -> bool:
    """Whether the Docker engine testcontainers would use answers a ping within the timeout.

    Asked through testcontainers' own client, so it finds the engine the same way the
    container backend will (``~/.testcontainers.properties``, ``DOCKER_HOST``, the Docker
    context, the default socket).
    """
    try:
        from testcontainers.core.docker_client import DockerClient  # slow import: only here

        client = DockerClient(timeout=timeout_s).client
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to reach an engine means "no Docker"
        return False


# --------------------------------------------------------------------------- readiness


def readiness_checks(settings: Settings) -> dict[str, Check]:
    """The processes' own health checks: ``SELECT 1`` on the database, broker metadata."""
    return {"postgres": database_check(settings), "kafka": kafka_check(settings)}


def wait_until_ready(
    settings: Settings,
    timeout_s: float = 120.0,
    interval_s: float = 0.5,
    checks: Callable[[Settings], Mapping[str, Check]] = readiness_checks,
) -> None:
    """Wait until PostgreSQL answers a query and the broker its metadata (both backends)."""
    pending = dict(checks(settings))
    failures: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for name, check in list(pending.items()):
            try:
                check()
            except (psycopg.Error, KafkaException, OSError) as error:
                failures[name] = f"{type(error).__name__}: {error}"
            else:
                del pending[name]
        if not pending:
            return
        if time.monotonic() >= deadline:
            details = "; ".join(f"{name}: {failures[name]}" for name in pending)
            raise TimeoutError(f"not ready after {timeout_s:g}s: {details}")
        time.sleep(interval_s)


# ------------------------------------------------------------------------------ backends


class InfraBackend(Protocol):
    """Starts the servers of a test run and stops them again."""

    name: str

    def start(self) -> SettingsOverrides:
        """Start the servers, wait until they answer; the Settings fields that reach them."""
        ...

    def stop(self) -> None:
        """Stop what :meth:`start` started (and nothing else)."""
        ...


class LocalBackend:
    """The servers of ``infra/local.sh``: start what does not run, stop only that."""

    name = LOCAL

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        run: Callable[..., str] = local,
        running: Callable[[], set[str]] = running_services,
        readiness: Readiness = wait_until_ready,
    ) -> None:
        self._env = os.environ if env is None else env
        self._run = run
        self._running = running
        self.readiness = readiness
        self._already: set[str] | None = None

    def start(self) -> SettingsOverrides:
        """``infra/local.sh up``; the servers listen where Settings point by default."""
        self._already = self._running()
        self._run("up")
        self.readiness(Settings())
        return {}

    def stop(self) -> None:
        """Stop the servers this run started, unless ``PREQUAL_TEST_KEEP_SERVERS`` is set."""
        if self._already is None:
            return
        started = [s for s in ("kafka", "postgres") if s not in self._already]
        self._already = None
        if started and not self._env.get(KEEP_SERVERS_VARIABLE):
            self._run("down", *started)


@dataclass(frozen=True)
class PostgresSpec:
    """The compose file's PostgreSQL service, as the container backend starts it."""

    image: str
    command: tuple[str, ...]
    user: str
    password: str
    database: str


@dataclass(frozen=True)
class KafkaSpec:
    """The compose file's Kafka service, as the container backend starts it."""

    image: str
    environment: Mapping[str, str]


@dataclass(frozen=True)
class ComposeServers:
    """The two servers of docker-compose.yml the suite needs."""

    postgres: PostgresSpec
    kafka: KafkaSpec


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):  # the "KEY=value" form
        return dict(str(item).split("=", 1) for item in raw)
    return {str(key): str(value) for key, value in raw.items()}


def compose_servers(path: Path = COMPOSE_FILE) -> ComposeServers:
    """PostgreSQL and Kafka as docker-compose.yml defines them."""
    services = yaml.safe_load(path.read_text())["services"]
    postgres, kafka = services["postgres"], services["kafka"]
    command = postgres.get("command") or ()
    pg_env = _environment(postgres)
    return ComposeServers(
        postgres=PostgresSpec(
            image=str(postgres["image"]),
            command=tuple(shlex.split(command) if isinstance(command, str) else map(str, command)),
            user=pg_env["POSTGRES_USER"],
            password=pg_env["POSTGRES_PASSWORD"],
            database=pg_env.get("POSTGRES_DB", pg_env["POSTGRES_USER"]),
        ),
        kafka=KafkaSpec(image=str(kafka["image"]), environment=_environment(kafka)),
    )


class ContainerServer(Protocol):
    """One server in a container, as the container backend uses it."""

    def start(self) -> None:
        """Start the container (returns once it runs; readiness is checked afterwards)."""
        ...

    def address(self) -> tuple[str, int]:
        """Host and mapped port where the suite reaches the server."""
        ...

    def stop(self) -> None:
        """Remove the container."""
        ...


POSTGRES_PORT = 5432
#: Inside the Kafka container: clients (mapped to the host), inter-broker, controller.
KAFKA_CLIENT_PORT, KAFKA_BROKER_PORT, KAFKA_CONTROLLER_PORT = 9092, 9091, 9093
KAFKA_STARTER = "/tmp/prequal_kafka_start.sh"  # noqa: S108 - a path inside the container
KAFKA_STARTER_READY = KAFKA_STARTER + ".ready"
KAFKA_IMAGE_PREFIX = "apache/kafka"


def kafka_container_environment(spec: KafkaSpec) -> dict[str, str]:
    """The compose file's Kafka environment, with listeners clients outside Docker reach.

    Compose advertises ``kafka:9092`` to the other containers; the suite runs on the host,
    where only the mapped port is known, and only after the container started. So, as
    testcontainers-java's KafkaContainer for ``apache/kafka`` does, the client listener is
    advertised by a start script written once the port is mapped (:func:`kafka_starter`),
    the broker talks to itself over a listener of its own, and the controller is local.
    """
    env = dict(spec.environment)
    env.pop("KAFKA_ADVERTISED_LISTENERS", None)
    env.update(
        {
            "KAFKA_LISTENERS": f"PLAINTEXT://:{KAFKA_CLIENT_PORT},"
            f"BROKER://:{KAFKA_BROKER_PORT},CONTROLLER://:{KAFKA_CONTROLLER_PORT}",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
                "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{KAFKA_CONTROLLER_PORT}",
        }
    )
    return env


def kafka_starter(host: str, port: int) -> str:
    """The script that starts the ``apache/kafka`` image advertising ``host:port``."""
    return (
        "#!/bin/bash\n"
        f'export KAFKA_ADVERTISED_LISTENERS="PLAINTEXT://{host}:{port},'
        f'BROKER://$(hostname):{KAFKA_BROKER_PORT}"\n'
        "exec /etc/kafka/docker/run\n"
    )


#: The container's command: wait for the start script (written after the port is mapped).
KAFKA_COMMAND = (
    "sh",
    "-c",
    f"while [ ! -f {KAFKA_STARTER_READY} ]; do sleep 0.1; done; exec bash {KAFKA_STARTER}",
)


class _PostgresContainer:
    """testcontainers' PostgresContainer with the compose file's command and credentials."""

    def __init__(self, spec: PostgresSpec) -> None:
        from testcontainers.community.postgres import PostgresContainer  # needs Docker

        self._container = PostgresContainer(
            spec.image,
            port=POSTGRES_PORT,
            username=spec.user,
            password=spec.password,
            dbname=spec.database,
            driver=None,
        ).with_command(list(spec.command))

    def start(self) -> None:
        self._container.start()  # returns once psql in the container runs a query

    def address(self) -> tuple[str, int]:
        return self._container.get_container_host_ip(), int(
            self._container.get_exposed_port(POSTGRES_PORT)
        )

    def stop(self) -> None:
        self._container.stop()


class _KafkaContainer:
    """The ``apache/kafka`` image in KRaft mode, configured by the compose file.

    testcontainers-python's KafkaContainer (4.x) drives Confluent's cp-kafka image only
    (its start script calls /etc/confluent/docker/*, and ``with_kraft()`` refuses image
    tags below 7.0.0, such as 4.3.1); this follows testcontainers-java's implementation
    for ``apache/kafka`` instead.
    """

    def __init__(self, spec: KafkaSpec) -> None:
        from testcontainers.core.container import DockerContainer  # needs Docker

        self._container = (
            DockerContainer(spec.image, env=kafka_container_environment(spec))
            .with_exposed_ports(KAFKA_CLIENT_PORT)
            .with_command(list(KAFKA_COMMAND))
        )

    def start(self) -> None:
        self._container.start()
        host, port = self.address()
        self._container.copy_into_container(kafka_starter(host, port).encode(), KAFKA_STARTER)
        # Written after the script is complete: the wait loop never runs half a script.
        self._container.copy_into_container(b"", KAFKA_STARTER_READY)

    def address(self) -> tuple[str, int]:
        return self._container.get_container_host_ip(), int(
            self._container.get_exposed_port(KAFKA_CLIENT_PORT)
        )

    def stop(self) -> None:
        self._container.stop()


class ContainerBackend:
    """PostgreSQL and Kafka as throwaway containers of the compose file's images."""

    name = CONTAINERS

    def __init__(
        self,
        *,
        servers: ComposeServers | None = None,
        postgres_container: Callable[[PostgresSpec], ContainerServer] = _PostgresContainer,
        kafka_container: Callable[[KafkaSpec], ContainerServer] = _KafkaContainer,
        readiness: Readiness = wait_until_ready,
    ) -> None:
        self.servers = compose_servers() if servers is None else servers
        if not self.servers.kafka.image.startswith(KAFKA_IMAGE_PREFIX + ":"):
            raise ValueError(
                f"docker-compose.yml's kafka image {self.servers.kafka.image!r} is not an"
                f" {KAFKA_IMAGE_PREFIX} image; the container backend starts Kafka through"
                " that image's /etc/kafka/docker/run"
            )
        self._postgres_container = postgres_container
        self._kafka_container = kafka_container
        self.readiness = readiness
        self._started: list[ContainerServer] = []

    def start(self) -> SettingsOverrides:
        """Start both containers and wait until they answer; stop them again on failure."""
        pg = self.servers.postgres
        try:
            postgres = self._postgres_container(pg)
            self._started.append(postgres)
            postgres.start()
            kafka = self._kafka_container(self.servers.kafka)
            self._started.append(kafka)
            kafka.start()
            pg_host, pg_port = postgres.address()
            kafka_host, kafka_port = kafka.address()
            overrides: SettingsOverrides = {
                "pg_host": pg_host,
                "pg_port": pg_port,
                "pg_user": pg.user,
                "pg_password": pg.password,
                "pg_database": pg.database,
                "kafka_bootstrap_servers": f"{kafka_host}:{kafka_port}",
            }
            self.readiness(Settings(**overrides))
        except BaseException:
            with contextlib.suppress(Exception):  # the start's failure is the one to report
                self.stop()
            raise
        return overrides

    def stop(self) -> None:
        """Remove every container this backend started, the last one first."""
        errors: list[Exception] = []
        while self._started:
            try:
                self._started.pop().stop()
            except Exception as error:  # remove the others all the same
                errors.append(error)
        if errors:
            raise errors[0]


BACKENDS: dict[str, Callable[[], InfraBackend]] = {
    LOCAL: LocalBackend,
    CONTAINERS: ContainerBackend,
}


def make_backend(name: str) -> InfraBackend:
    """A fresh backend of the given name (``local`` or ``containers``)."""
    return BACKENDS[name]()
