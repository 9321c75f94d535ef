"""Where the suite's PostgreSQL and Kafka come from: local servers, or containers.

One backend is chosen per run (:func:`select_backend`, from ``PREQUAL_TEST_INFRA``):

* ``local`` - servers of the session's own, run by ``infra/local.sh`` on free ports in a
  slot of the suite's infra dir (``$PREQUAL_TEST_INFRA_DIR``, default ``suite`` inside
  ``$PREQUAL_INFRA_DIR``: ``.infra/suite/1``, ``.infra/suite/2`` for a concurrent session,
  ...; :class:`LocalBackend`). Never the servers of a running system (``make run``,
  ``make infra-up``, another clone's): the outage and CDC tests stop, restart and
  reconfigure the servers they use, and a running system's default ports (55432, 9092,
  9093, 8083) may be held by anyone. Started when they do not run yet, stopped at the
  end if the session started them (``PREQUAL_TEST_KEEP_SERVERS`` keeps them running for
  the next session in the slot).
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
import fcntl
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import psycopg
import yaml  # type: ignore[import-untyped]
from confluent_kafka import KafkaException

from runtime.health import database_check
from runtime.kafka import kafka_check
from runtime.settings import Settings
from tests.support.infra import LOCAL_SH, ROOT
from tests.support.processes import free_ports

COMPOSE_FILE = ROOT / "docker-compose.yml"

INFRA_VARIABLE = "PREQUAL_TEST_INFRA"
KEEP_SERVERS_VARIABLE = "PREQUAL_TEST_KEEP_SERVERS"
#: The local backend's infra dir (default: ``suite`` inside ``$PREQUAL_INFRA_DIR``).
SUITE_INFRA_DIR_VARIABLE = "PREQUAL_TEST_INFRA_DIR"
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
    if selection.backend == LOCAL:
        lines.append(
            f"prequal infra: servers of this session's own in a slot of"
            f" {suite_infra_dir(os.environ)}, on free ports (never a running system's)"
        )
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


def suite_infra_dir(env: Mapping[str, str]) -> Path:
    """The local backend's infra dir: ``$PREQUAL_TEST_INFRA_DIR``, else ``<infra dir>/suite``.

    ``<infra dir>`` is ``$PREQUAL_INFRA_DIR`` or ``<repo>/.infra``, the servers of a running
    system: the suite's live beside them, never in the same directory.
    """
    explicit = env.get(SUITE_INFRA_DIR_VARIABLE, "").strip()
    if explicit:
        return Path(explicit).absolute()
    base = env.get("PREQUAL_INFRA_DIR", "").strip() or str(ROOT / ".infra")
    return Path(base).absolute() / "suite"


@dataclass(frozen=True)
class SuiteServers:
    """Where the local backend's servers live and listen (all on 127.0.0.1)."""

    infra_dir: Path
    pg_port: int
    kafka_port: int
    kafka_controller_port: int
    connect_port: int

    def environment(self) -> dict[str, str]:
        """The variables that make ``infra/local.sh`` act on these servers, and only them."""
        return {
            "PREQUAL_INFRA_DIR": str(self.infra_dir),
            "PREQUAL_PG_HOST": "127.0.0.1",
            "PREQUAL_PG_PORT": str(self.pg_port),
            # The suite runs on one broker, whatever a developer's shell chose for make run
            # (the cluster has drills of its own: make test-cluster).
            "PREQUAL_KAFKA_BROKERS": "1",
            "PREQUAL_KAFKA_PORT": str(self.kafka_port),
            # Clients reach the broker directly (only tests/fault's rig puts a proxy between).
            "PREQUAL_KAFKA_ADVERTISED_PORT": str(self.kafka_port),
            "PREQUAL_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "PREQUAL_CONNECT_PORT": str(self.connect_port),
        }

    def overrides(self) -> SettingsOverrides:
        """The Settings fields that reach these servers (Kafka Connect's REST API too)."""
        return {
            "pg_host": "127.0.0.1",
            "pg_port": self.pg_port,
            "kafka_bootstrap_servers": f"127.0.0.1:{self.kafka_port}",
            "connect_url": f"http://127.0.0.1:{self.connect_port}",
        }


_STATUS_LINE = re.compile(r"^(postgres|kafka|connect): running \(pid \d+, port (\d+)\)")


def running_ports(status: str) -> dict[str, int]:
    """``infra/local.sh status`` output -> the port of each service that runs."""
    found: dict[str, int] = {}
    for line in status.splitlines():
        match = _STATUS_LINE.match(line.strip())
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def choose_servers(
    infra_dir: Path, running: Mapping[str, int], ports: Callable[[int], list[int]] = free_ports
) -> SuiteServers:
    """The suite's servers: a running service keeps its port, every other one gets a free one.

    Ports may change between runs: infra/local.sh rewrites each server's configuration on
    every start (Kafka's quorum voters are static, so the controller may move too).
    """
    pg, kafka, controller, connect = ports(4)
    return SuiteServers(
        infra_dir=infra_dir,
        pg_port=running.get("postgres", pg),
        kafka_port=running.get("kafka", kafka),
        # Read only when Kafka starts; while it runs, a restart may take a new one.
        kafka_controller_port=controller,
        connect_port=running.get("connect", connect),
    )


def run_local_sh(env: Mapping[str, str], *args: str, timeout: float = 300) -> str:
    """Run ``infra/local.sh ARGS`` with exactly ``env``; its output, or RuntimeError with it."""
    result = subprocess.run(
        [str(LOCAL_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env),
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"infra/local.sh {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result.stdout


#: A session holds its slot's lock exclusively while it runs; the services it started.
SLOT_LOCK, STARTED_FILE = "session.lock", "started-by-session"
#: Concurrent sessions on one machine (one clone) before a new one waits for a slot.
MAX_SLOTS = 8
SLOT_WAIT_S = 600.0


def _try_lock(path: Path) -> IO[bytes] | None:
    """``path`` opened and flock'ed exclusively, or None when another process holds it."""
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim_slot(
    base: Path, slots: int = MAX_SLOTS, wait_s: float = SLOT_WAIT_S
) -> tuple[Path, IO[bytes]]:
    """The first of ``base/1`` .. ``base/<slots>`` no other session holds, and its lock.

    The lock is held until the returned file is closed (or the process ends, however it
    ends). Raises TimeoutError when every slot stays taken for ``wait_s`` seconds.
    """
    deadline = time.monotonic() + wait_s
    while True:
        for number in range(1, slots + 1):
            slot = base / str(number)
            slot.mkdir(parents=True, exist_ok=True)
            lock = _try_lock(slot / SLOT_LOCK)
            if lock is not None:
                return slot, lock
        if time.monotonic() >= deadline:
            raise TimeoutError(f"all {slots} server slots in {base} stayed taken for {wait_s:g}s")
        time.sleep(0.5)


class LocalBackend:
    """Servers of this session's own, run by ``infra/local.sh`` in a slot of the suite's dir.

    :meth:`start` claims a slot (``<suite infra dir>/<n>``, one session each, so one
    session's outage tests never hit another's servers), reuses the servers running there
    (kept by ``PREQUAL_TEST_KEEP_SERVERS``, or left by an interrupted session), else starts
    them on free ports, and points ``environ``'s infra/local.sh variables (PREQUAL_INFRA_DIR,
    the ports) at them for the session, so that every ``infra/local.sh`` a test runs (the
    outage tests' ``down kafka``, Kafka Connect) acts on them. Never a running system's
    servers, whatever holds the default ports. :meth:`stop` stops what a session started
    in the slot, unless ``PREQUAL_TEST_KEEP_SERVERS`` is set, and puts ``environ`` back.
    """

    name = LOCAL

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        environ: MutableMapping[str, str] | None = None,
        run: Callable[..., str] = run_local_sh,
        ports: Callable[[int], list[int]] = free_ports,
        readiness: Readiness = wait_until_ready,
        slot_wait_s: float = SLOT_WAIT_S,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        # A copy: the session's own changes to ``environ`` must not move the infra dir.
        self._env = dict(self._environ if env is None else env)
        self._run = run
        self._ports = ports
        self.readiness = readiness
        self._slot_wait_s = slot_wait_s
        self.servers: SuiteServers | None = None
        self._slot: IO[bytes] | None = None
        self._saved: dict[str, str | None] = {}

    @property
    def infra_dir(self) -> Path:
        """The suite's infra dir, whose numbered slots hold the servers (see
        :func:`suite_infra_dir`)."""
        return suite_infra_dir(self._env)

    def _keep(self) -> bool:
        return bool(self._env.get(KEEP_SERVERS_VARIABLE, "").strip())

    def _local_env(self, servers_env: Mapping[str, str]) -> dict[str, str]:
        return {**self._env, **servers_env}

    def start(self) -> SettingsOverrides:
        """Claim a slot, reuse or start its servers and wait until they answer.

        Returns the Settings fields that reach them. Raises RuntimeError (with
        infra/local.sh's output) when they cannot start, TimeoutError when they do not
        answer or no slot frees up in time.
        """
        slot, self._slot = claim_slot(self.infra_dir, wait_s=self._slot_wait_s)
        try:
            status = self._run(self._local_env({"PREQUAL_INFRA_DIR": str(slot)}), "status")
            running = running_ports(status)
            servers = choose_servers(slot, running, self._ports)
            self._point_environ_at(servers)
            started = {"postgres", "kafka"} - set(running)
            if started and not self._keep():
                # Before up: a start that fails half-way is stopped like a finished one.
                self._record_started(slot, started)
            self._run(self._local_env(servers.environment()), "up")
            self.readiness(Settings(**servers.overrides()))
        except BaseException:
            with contextlib.suppress(Exception):  # the start's failure is the one to report
                self.stop()
            raise
        return servers.overrides()

    def stop(self) -> None:
        """Stop what a session started in this slot (unless kept), free the slot."""
        servers, slot_lock = self.servers, self._slot
        self._slot = None
        try:
            if servers is None or slot_lock is None:
                return
            started = servers.infra_dir / STARTED_FILE
            if self._keep() or not started.exists():
                return
            services = set(started.read_text().split())
            # Plain down also stops a Kafka Connect a test left running.
            args = () if {"postgres", "kafka"} <= services else tuple(sorted(services))
            self._run(self._local_env(servers.environment()), "down", *args)
            started.unlink()
        finally:
            if slot_lock is not None:
                slot_lock.close()  # closing the last descriptor releases the flock
            self._restore_environ()

    def _record_started(self, slot: Path, services: set[str]) -> None:
        # Services an interrupted session started here are this session's to stop too.
        path = slot / STARTED_FILE
        before = set(path.read_text().split()) if path.exists() else set()
        path.write_text("\n".join(sorted(before | services)) + "\n")

    def _point_environ_at(self, servers: SuiteServers) -> None:
        self.servers = servers
        for key, value in servers.environment().items():
            self._saved.setdefault(key, self._environ.get(key))
            self._environ[key] = value

    def _restore_environ(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                self._environ.pop(key, None)
            else:
                self._environ[key] = value
        self._saved = {}
        self.servers = None


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


#: Compose's ``${NAME:-default}``: the Kafka service takes the cluster's values from
#: infra/kafka/compose-cluster.env, and its defaults are the single node's.
_UNSET_DEFAULT = re.compile(r"\$\{[A-Za-z0-9_]+:-([^}]*)\}")


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as Compose resolves it with no variable set."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):  # the "KEY=value" form
        pairs = dict(str(item).split("=", 1) for item in raw)
    else:
        pairs = {str(key): str(value) for key, value in raw.items()}
    return {key: _UNSET_DEFAULT.sub(r"\1", value) for key, value in pairs.items()}


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
