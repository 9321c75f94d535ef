"""Broker failures on a three-broker KRaft cluster, under load: what production survives.

Each drill runs the six processes against a cluster of the suite's own (three nodes,
each broker and controller; topics and internal topics with 3 replicas and
min.insync.replicas 2; infra/local.sh with PREQUAL_KAFKA_BROKERS=3 in .infra/cluster on
free ports), drives them open-loop at 100 POST/s plus 20 status GET/s from a process of
its own (tests/fault/load.py), and meanwhile takes brokers away:

* the leader of ``loan_applications_submitted``'s partition 0, SIGKILLed and restarted;
* every broker in turn, stopped (SIGTERM) and restarted, waiting each time until every
  replica is back in sync: a rolling restart;
* the credit worker's consumer group coordinator, SIGKILLed while the worker's
  transactions run (it commits one every few tens of milliseconds under this load);
* the coordinator of the credit worker's transactional id, SIGKILLed likewise, so that
  commits in flight lose their coordinator.

Each asserts, from outside: every accepted application is decided; exactly one
LoanApplicationDecided outbox row per application; no credit report a ``read_committed``
reader sees more often than its submitted event was published (the relay publishes at
least once, the credit worker's transactions exactly once per message consumed); no
request without an answer, and the POST p99 under a generous bound. The figures (p99,
time to decide the backlog, counts, failover, the brokers' resident memory) are printed
into the CI log and recorded as the test's ``figures`` property.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bench.loadgen import percentile
from runtime.dev_issuer import issue_token
from runtime.settings import Settings
from schema.events import EventType
from schema.migrate import upgrade
from tests.conftest import TABLES, Spawn
from tests.fault.checks import (
    credit_report_violations,
    events_per_application,
    ms,
    relay_redeliveries,
)
from tests.fault.load import Answer, parse
from tests.support.auth import ALL_SCOPES
from tests.support.cluster import NODES, KafkaCluster
from tests.support.infra import recreate_database
from tests.support.kafka import isolated_topics
from tests.support.pipeline import Pipeline, start_pipeline
from tests.support.processes import wait_until

# The rolling restart alone takes about a minute of load, then the checks.
pytestmark = [pytest.mark.kafka_cluster, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
#: Kept between runs so Kafka's jars are resolved once; the servers are stopped at the end.
INFRA_DIR = ROOT / ".infra" / "cluster"
DATABASE = "prequal_cluster"

POST_RATE = 100.0  # POST /applications per second
GET_RATE = 20.0  # GET /applications/{id}/status per second
STARTUP_S = 2.0  # for the load generator's process to start before its first send
BEFORE_S = 4.0  # load before the fault: the steady state
DOWN_S = 5.0  # how long a killed broker stays down before it is restarted
# Load long enough to cover the fault and the recovery after it: a kill, 5 s down and a
# restart take 15-20 s on a quiet machine, a rolling restart three times that.
KILL_LOAD_S = 35.0
ROLLING_LOAD_S = 75.0
#: The APIs write PostgreSQL only, so a broker's loss should not reach them at all; but
#: on two cores a restarting broker's JVM (its start and JIT) takes CPU from them, and a
#: request waits for a core before its 2 s deadline starts. Twice the network-fault
#: drills' limit (deadline + 0.5 s): what the drill catches is a hang, not a slow core.
P99_LIMIT_S = 5.0
DECIDE_TIMEOUT_S = 90.0  # after the load ends, for every accepted application


@dataclass(frozen=True)
class ClusterRig:
    """The cluster, and the settings that reach it and the rig's PostgreSQL."""

    cluster: KafkaCluster
    settings: Settings


@pytest.fixture(scope="session")
def cluster_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRig]:
    """PostgreSQL and three Kafka nodes in .infra/cluster on free ports; all stopped after."""
    cluster = KafkaCluster.on_free_ports(INFRA_DIR)
    cluster.local("down")  # servers of an interrupted run (ours: same infra dir)
    # Every drill makes topics of its own: start from none (a new cluster id too).
    shutil.rmtree(INFRA_DIR / "kafka" / "cluster", ignore_errors=True)
    cluster.local("up")
    try:
        settings = Settings(
            kafka_brokers=3,
            pg_port=cluster.pg_port,
            kafka_bootstrap_servers=cluster.bootstrap_servers,
            pg_database=DATABASE,
            kafka_session_timeout_ms=6000,
            kafka_transaction_timeout_ms=10000,
            relay_poll_interval_s=0.5,
            relay_standby_retry_s=0.5,
            relay_delivery_timeout_ms=5000,
            # The drills' own development issuer, and no rate limit in reach.
            auth_dev_dir=str(tmp_path_factory.mktemp("cluster-auth")),
            rate_limit_per_s=100_000.0,
            rate_limit_burst=100_000,
        )
        assert settings.topic_replication_factor == 3
        recreate_database(settings.model_copy(update={"pg_database": "prequal"}), DATABASE)
        upgrade(settings.sqlalchemy_url)
        yield ClusterRig(cluster, settings)
    finally:
        cluster.local("down")


@pytest.fixture
def cluster_pipeline(cluster_rig: ClusterRig, spawn: Spawn) -> Pipeline:
    """The six processes on an emptied database and topics of their own, all brokers in sync.

    A node an earlier (failed) drill left down is started again first.
    """
    cluster_rig.cluster.local("up")
    cluster_rig.cluster.wait_in_sync()
    with psycopg.connect(cluster_rig.settings.psycopg_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in TABLES))
        )
    return start_pipeline(isolated_topics(cluster_rig.settings), spawn)


@dataclass
class Drill:
    """What one drill observed; times in seconds since the load started."""

    injected_s: float = 0.0
    healed_s: float = 0.0
    load_end_s: float = 0.0
    what: str = ""  # the fault as it happened (which node, failover, in-sync times)
    answers: list[Answer] = field(default_factory=list)
    backlog_decided_s: float | None = None  # when those stored before the fault were
    all_decided_s: float | None = None  # when every accepted application was
    rss_mib: dict[int, float] = field(default_factory=dict)  # highest per node

    def accepted(self) -> list[str]:
        """Ids of every application answered 202."""
        return [a.application_id for a in self.answers if a.application_id is not None]


async def _count_pending(db: psycopg.AsyncConnection, query: str, argument: object) -> int:
    cursor = await db.execute(query, (argument,))
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


PENDING_BEFORE = "SELECT count(*) FROM applications WHERE created_at <= %s AND status = 'PENDING'"
PENDING_OF = "SELECT count(*) FROM applications WHERE id = ANY(%s::uuid[]) AND status = 'PENDING'"


async def _sample_memory(cluster: KafkaCluster, drill: Drill, stop: asyncio.Event) -> None:
    """Keep the highest resident size of each broker JVM, sampled once a second."""
    while not stop.is_set():
        for node, mib in (await asyncio.to_thread(cluster.rss_mib)).items():
            drill.rss_mib[node] = max(mib, drill.rss_mib.get(node, 0.0))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            continue


async def _backlog_decided(
    rig: ClusterRig, drill: Drill, injected_at: datetime, origin: float, timeout_s: float
) -> None:
    """Set ``drill.backlog_decided_s`` once every application stored before the fault is decided.

    Polled from the fault on, while the load goes on: what was in flight when the broker
    went (in the relay, the topics, a worker's open transaction) is the backlog.
    """
    clock = time.perf_counter
    deadline = clock() + timeout_s
    async with await psycopg.AsyncConnection.connect(
        rig.settings.psycopg_conninfo, autocommit=True
    ) as db:
        while clock() < deadline:
            if await _count_pending(db, PENDING_BEFORE, injected_at) == 0:
                drill.backlog_decided_s = clock() - origin
                return
            await asyncio.sleep(0.25)


async def _run_drill(
    rig: ClusterRig, pipeline: Pipeline, fault: Callable[[], str], seconds: float
) -> tuple[Drill, int]:
    """Load for ``seconds``; ``fault()`` (blocking) after BEFORE_S; then wait for decisions.

    Returns the drill and how many accepted applications were still pending at the end.
    """
    drill = Drill()
    clock = time.perf_counter
    origin = clock() + STARTUP_S
    generator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fault.load",
        f"--command-url={pipeline.command}",
        f"--query-url={pipeline.query}",
        f"--seconds={seconds}",
        f"--origin={origin!r}",
        f"--post-rate={POST_RATE}",
        f"--get-rate={GET_RATE}",
        f"--token={issue_token(pipeline.settings, 'cluster-load', ALL_SCOPES)}",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    output = asyncio.create_task(generator.communicate())
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(_sample_memory(rig.cluster, drill, stop_sampling))
    pending = -1
    try:
        await asyncio.sleep(origin + BEFORE_S - clock())
        drill.injected_s = clock() - origin
        # Kills, restarts and waits block: off the loop, so the sampler and the backlog
        # poll keep going while a broker is down.
        backlog = asyncio.create_task(
            _backlog_decided(rig, drill, datetime.now(UTC), origin, seconds + DECIDE_TIMEOUT_S)
        )
        drill.what = await asyncio.to_thread(fault)
        drill.healed_s = clock() - origin
        await backlog
        async with await psycopg.AsyncConnection.connect(
            rig.settings.psycopg_conninfo, autocommit=True
        ) as db:
            stdout, _ = await asyncio.wait_for(output, timeout=seconds + 120)
            assert generator.returncode == 0, "the load generator failed (see its stderr)"
            drill.answers = parse(stdout.decode())
            drill.load_end_s = max((a.done_s for a in drill.answers), default=0.0)
            accepted = drill.accepted()
            deadline = clock() + DECIDE_TIMEOUT_S
            pending = await _count_pending(db, PENDING_OF, accepted)
            while pending and clock() < deadline:
                await asyncio.sleep(0.25)
                pending = await _count_pending(db, PENDING_OF, accepted)
            if not pending:
                drill.all_decided_s = clock() - origin
    finally:
        stop_sampling.set()
        await sampler
        if generator.returncode is None:  # the drill failed half-way: stop sending
            generator.kill()
            await output
    return drill, pending


def _decision_rows(settings: Settings) -> Counter[str]:
    """LoanApplicationDecided outbox rows per application (replays excluded)."""
    with psycopg.connect(settings.psycopg_conninfo, autocommit=True) as db:
        rows = db.execute(
            "SELECT aggregateid, count(*) FROM outbox"
            " WHERE type = 'LoanApplicationDecided' AND replay_of IS NULL GROUP BY aggregateid"
        ).fetchall()
    return Counter({str(aggregate): int(count) for aggregate, count in rows})


def _judge(name: str, drill: Drill, pending: int, pipeline: Pipeline) -> tuple[str, list[str]]:
    """The drill's printable figures, and every property it broke."""
    settings = pipeline.settings
    accepted = set(drill.accepted())
    decided = _decision_rows(settings)
    submitted = events_per_application(
        settings,
        settings.topic_submitted,
        EventType.LOAN_APPLICATION_SUBMITTED,
        accepted,
        settle_s=3.0,
        timeout_s=60.0,
    )
    reports = events_per_application(
        settings,
        settings.topic_credit_reports,
        EventType.CREDIT_REPORT_GENERATED,
        accepted,
        settle_s=3.0,
        timeout_s=60.0,
    )
    posts = [a.latency_s for a in drill.answers if a.api == "command"]
    gets = [a.latency_s for a in drill.answers if a.api == "query"]
    during = [
        a.latency_s
        for a in drill.answers
        if a.api == "command" and drill.injected_s <= a.scheduled_s <= drill.healed_s
    ]
    statuses = Counter(a.status for a in drill.answers)
    redelivered = relay_redeliveries(submitted)
    backlog = (
        f"{drill.backlog_decided_s - drill.injected_s:.1f} s"
        if drill.backlog_decided_s is not None
        else "never"
    )
    drained = (
        f"{drill.all_decided_s - drill.load_end_s:.1f} s"
        if drill.all_decided_s is not None
        else "never"
    )
    memory = ", ".join(f"kafka-{n} {mib:.0f} MiB" for n, mib in sorted(drill.rss_mib.items()))
    figures = (
        f"\n  [{name}] {drill.what}"
        f"\n  [{name}] fault {drill.injected_s:.1f}-{drill.healed_s:.1f} s of a"
        f" {drill.load_end_s:.0f} s load; backlog (stored before the fault) decided {backlog}"
        f" after the fault began; every accepted decided {drained} after the load ended"
        f"\n  [{name}] accepted={len(accepted)} undecided={pending}"
        f" decision rows={sum(decided.values())} (applications with more than one:"
        f" {sum(1 for c in decided.values() if c > 1)}) credit reports read="
        f"{sum(len(ids) for ids in reports.values())} submitted events read="
        f"{sum(len(ids) for ids in submitted.values())} (relay redeliveries {redelivered})"
        f" statuses={dict(sorted(statuses.items()))}"
        f"\n  [{name}] POST p50={ms(posts, 50)} p99={ms(posts, 99)} max={ms(posts, 100)}"
        f" (sent during the fault: p99={ms(during, 99)});"
        f" GET p99={ms(gets, 99)}; bound {P99_LIMIT_S * 1000:.0f} ms"
        f"\n  [{name}] broker resident memory, highest: {memory}"
    )

    violations: list[str] = []
    if pending:
        violations.append(f"{pending} accepted applications never decided")
    if not_once := {a: decided.get(a, 0) for a in accepted if decided.get(a, 0) != 1}:
        violations.append(
            f"{len(not_once)} accepted applications without exactly one decision row:"
            f" {Counter(not_once.values())} (count: applications)"
        )
    violations += credit_report_violations(reports, submitted, accepted)
    if unanswered := Counter(a.error for a in drill.answers if a.status == 0):
        violations.append(f"requests without an HTTP answer: {dict(unanswered)}")
    if unexpected := {s: n for s, n in statuses.items() if s not in (0, 200, 202, 404, 503)}:
        violations.append(f"unexpected statuses: {unexpected}")
    if posts and percentile(posts, 99) > P99_LIMIT_S:
        violations.append(f"POST p99 {percentile(posts, 99):.2f} s > {P99_LIMIT_S:.1f} s")
    return figures, violations


def _drill(
    name: str,
    rig: ClusterRig,
    pipeline: Pipeline,
    fault: Callable[[], str],
    seconds: float,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    """Run one drill, print its figures into the CI log, fail listing every broken property."""
    drill, pending = asyncio.run(_run_drill(rig, pipeline, fault, seconds))
    figures, violations = _judge(name, drill, pending, pipeline)
    record_property("figures", figures)
    with capsys.disabled():  # the drill's measurements belong in the CI log
        print(figures)
    assert violations == [], "\n".join(violations) + figures


def _kill_and_restart(cluster: KafkaCluster, node: int, led: Callable[[], int], role: str) -> str:
    """SIGKILL ``node``; time until ``led()`` names another node; restart it; wait in sync."""
    killed = time.monotonic()
    cluster.kill(node)
    successor: list[int] = []

    def moved() -> bool:
        try:
            now = led()
        except Exception:  # no leader or coordinator yet
            return False
        if now in (node, -1):
            return False
        successor.append(now)
        return True

    try:
        wait_until(moved, 60, lambda: f"{role} still on kafka-{node}", interval_s=0.2)
        failover = time.monotonic() - killed
        time.sleep(max(0.0, DOWN_S - failover))
    finally:
        # Even when the failover was not seen: the next drill needs all three brokers.
        cluster.local("up", f"kafka-{node}")
    restarted = time.monotonic() - killed
    in_sync = cluster.wait_in_sync()
    return (
        f"{role}: kafka-{node} SIGKILLed; kafka-{successor[0]} took over after {failover:.1f} s;"
        f" restarted {restarted:.1f} s after the kill, every replica in sync {in_sync:.1f} s later"
    )


def test_the_submitted_topics_leader_killed_and_restarted_loses_and_doubles_nothing(
    cluster_rig: ClusterRig,
    cluster_pipeline: Pipeline,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    cluster, topic = cluster_rig.cluster, cluster_pipeline.settings.topic_submitted

    def fault() -> str:
        leader = cluster.partition_leader(topic, 0)
        return _kill_and_restart(
            cluster, leader, lambda: cluster.partition_leader(topic, 0), f"leader of {topic}-0"
        )

    _drill(
        "leader killed", cluster_rig, cluster_pipeline, fault, KILL_LOAD_S, capsys, record_property
    )


def test_a_rolling_restart_of_every_broker_loses_and_doubles_nothing(
    cluster_rig: ClusterRig,
    cluster_pipeline: Pipeline,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    cluster = cluster_rig.cluster

    def fault() -> str:
        steps = []
        for node in NODES:
            started = time.monotonic()
            # SIGTERM: a controlled shutdown hands the node's leaderships over first.
            cluster.local("restart", f"kafka-{node}")
            restarted = time.monotonic() - started
            in_sync = cluster.wait_in_sync()
            steps.append(f"kafka-{node} restarted in {restarted:.1f} s, in sync {in_sync:.1f} s")
        return "rolling restart: " + "; ".join(steps)

    _drill(
        "rolling restart",
        cluster_rig,
        cluster_pipeline,
        fault,
        ROLLING_LOAD_S,
        capsys,
        record_property,
    )


def test_the_credit_workers_group_coordinator_lost_mid_transaction_loses_and_doubles_nothing(
    cluster_rig: ClusterRig,
    cluster_pipeline: Pipeline,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    cluster, group = cluster_rig.cluster, cluster_pipeline.settings.group_credit_worker

    # The coordinator describe_consumer_groups names is the leader of the group's
    # __consumer_offsets partition; after the kill, the metadata says when that moved.
    assert cluster.group_coordinator(group) == cluster.group_coordinator_by_metadata(group)

    def fault() -> str:
        coordinator = cluster.group_coordinator(group)
        return _kill_and_restart(
            cluster,
            coordinator,
            lambda: cluster.group_coordinator_by_metadata(group),
            f"coordinator of group {group}",
        )

    _drill(
        "group coordinator killed",
        cluster_rig,
        cluster_pipeline,
        fault,
        KILL_LOAD_S,
        capsys,
        record_property,
    )


def test_the_credit_workers_transaction_coordinator_lost_mid_commit_loses_and_doubles_nothing(
    cluster_rig: ClusterRig,
    cluster_pipeline: Pipeline,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    cluster = cluster_rig.cluster
    transactional_id = f"prequal-credit-worker-{cluster_pipeline.settings.instance_id}"
    # The computed coordinator (leader of the id's __transaction_state partition) is what
    # the drill kills; Kafka's own tool must agree with it.
    computed = cluster.transaction_coordinator(transactional_id)
    assert cluster.described_transaction_coordinator(transactional_id) == computed

    def fault() -> str:
        coordinator = cluster.transaction_coordinator(transactional_id)
        return _kill_and_restart(
            cluster,
            coordinator,
            lambda: cluster.transaction_coordinator(transactional_id),
            f"transaction coordinator of {transactional_id}",
        )

    _drill(
        "transaction coordinator killed",
        cluster_rig,
        cluster_pipeline,
        fault,
        KILL_LOAD_S,
        capsys,
        record_property,
    )
