"""Replay: re-emit chosen original outbox events after an outage, through the outbox itself.

A replay never produces to Kafka. It INSERTs new outbox rows that copy the chosen
original rows (``event_id``, ``aggregatetype``, ``aggregateid``, ``type``, ``topic``,
``payload``, ``correlation_id``, ``causation_id``, ``traceparent``) with ``replay_of`` set
to the original row's ``id`` and a fresh ``id``, ``seq`` and ``occurred_at``, unpublished.
Whichever relay is active (polling or Debezium) then delivers them like any insert, with
the original event id, and every consumer's inbox applies only what it never applied.

What is replayed:

- only original rows (``replay_of IS NULL``): replaying a replay would only duplicate it;
- rows matching every given criterion: ``occurred_at`` in ``[since, until)``, ``seq`` in
  ``[from_seq, to_seq]`` (both inclusive), ``aggregateid`` and ``type`` equal;
- at least one criterion is required: an unbounded replay is refused;
- rows that existed when the replay was planned: the upper ``seq`` bound is fixed then
  (``max(seq)``), so rows inserted while it runs, replays included, are never picked up
  and the count the operator confirmed is the count emitted (unless rows were purged).

How: one ``INSERT … SELECT … ORDER BY seq`` per batch (keyset on ``seq``), each batch
its own transaction, so a large replay never holds one long transaction or a huge
snapshot, and the relay starts delivering after the first commit. With a rate, batches
are sized to at most one second of events and the replay sleeps between them.

Audit: exactly one ``outbox_replays`` row per replay. It is inserted in the first
batch's transaction and its ``rows_emitted`` is incremented in every later batch's
transaction, so it always equals the rows actually committed, even when a replay is
interrupted half-way. A replay that matches nothing still records its row (0 emitted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

#: Rows inserted per transaction.
DEFAULT_BATCH_SIZE = 1000

_COPIED = sql.SQL(
    "event_id, aggregatetype, aggregateid, type, topic, payload,"
    " correlation_id, causation_id, traceparent"
)
_BATCH = sql.SQL("""
    WITH batch AS (
        SELECT id, seq, {copied}
          FROM outbox
         WHERE {where} AND seq > %(after)s
         ORDER BY seq
         LIMIT %(limit)s
    ), emitted AS (
        INSERT INTO outbox ({copied}, replay_of)
        SELECT {copied}, id FROM batch ORDER BY seq
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM emitted), (SELECT max(seq) FROM batch)
    """)
_PREVIEW = sql.SQL("""
    SELECT seq, event_id, type, aggregateid, topic, occurred_at
      FROM outbox WHERE {where} ORDER BY seq LIMIT %(limit)s
    """)
_COUNT = sql.SQL("SELECT count(*) FROM outbox WHERE {where}")
_AUDIT = """
    INSERT INTO outbox_replays (requested_by, criteria, rows_emitted)
    VALUES (%s, %s, %s) RETURNING id
"""
_AUDIT_ADD = "UPDATE outbox_replays SET rows_emitted = rows_emitted + %s WHERE id = %s"


class UnboundedReplay(ValueError):
    """No range or filter was given: replaying the whole outbox is refused."""


@dataclass(frozen=True)
class ReplayCriteria:
    """Which original events to replay; every given criterion must hold."""

    since: datetime | None = None
    until: datetime | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    aggregate_id: str | None = None
    event_type: str | None = None

    def validate(self) -> None:
        """Raise :class:`ValueError` for an unbounded, empty or ambiguous selection."""
        if all(value is None for value in self._given().values()):
            raise UnboundedReplay(
                "refusing an unbounded replay: give at least one of --since, --until, "
                "--from-seq, --to-seq, --aggregate-id, --type"
            )
        for name, moment in (("since", self.since), ("until", self.until)):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"{name} must carry a UTC offset (e.g. 2024-05-01T10:00:00Z)")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be earlier than until")
        if self.from_seq is not None and self.to_seq is not None and self.from_seq > self.to_seq:
            raise ValueError("from_seq must not be greater than to_seq")

    def as_json(self) -> dict[str, Any]:
        """The given criteria, JSON-ready (for the audit row and for scripts)."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in self._given().items()
            if value is not None
        }

    def _given(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "aggregate_id": self.aggregate_id,
            "type": self.event_type,
        }

    def where(self, up_to_seq: int) -> tuple[sql.Composed, dict[str, Any]]:
        """The SQL condition selecting the originals to replay, and its parameters."""
        clauses = [sql.SQL("replay_of IS NULL"), sql.SQL("seq <= %(up_to_seq)s")]
        params: dict[str, Any] = {"up_to_seq": up_to_seq}
        optional = (
            ("since", self.since, "occurred_at >= %(since)s"),
            ("until", self.until, "occurred_at < %(until)s"),
            ("from_seq", self.from_seq, "seq >= %(from_seq)s"),
            ("to_seq", self.to_seq, "seq <= %(to_seq)s"),
            ("aggregate_id", self.aggregate_id, "aggregateid = %(aggregate_id)s"),
            ("event_type", self.event_type, "type = %(event_type)s"),
        )
        for name, value, clause in optional:
            if value is not None:
                clauses.append(sql.SQL(clause))
                params[name] = value
        return sql.SQL(" AND ").join(clauses), params


@dataclass(frozen=True)
class ReplayCandidate:
    """One original row a replay would re-emit."""

    seq: int
    event_id: UUID
    type: str
    aggregateid: str
    topic: str
    occurred_at: datetime

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seq": self.seq,
            "event_id": str(self.event_id),
            "type": self.type,
            "aggregateid": self.aggregateid,
            "topic": self.topic,
            "occurred_at": self.occurred_at.isoformat(),
        }


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay would emit: how many rows, the first of them, and the ``seq`` bound."""

    criteria: ReplayCriteria
    up_to_seq: int
    count: int
    first: list[ReplayCandidate] = field(default_factory=list)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did."""

    replay_id: int
    rows_emitted: int
    batches: int


def plan_replay(conn: psycopg.Connection, criteria: ReplayCriteria, show: int = 10) -> ReplayPlan:
    """Count the rows ``criteria`` select now and read the first ``show`` of them.

    Reads only: this is the dry run, and the plan an operator confirms.
    """
    criteria.validate()
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()
    up_to_seq = int(row[0]) if row else 0
    where, params = criteria.where(up_to_seq)
    counted = conn.execute(_COUNT.format(where=where), params).fetchone()
    with conn.cursor(row_factory=psycopg.rows.class_row(ReplayCandidate)) as cursor:
        first = cursor.execute(_PREVIEW.format(where=where), {**params, "limit": show}).fetchall()
    if conn.info.transaction_status == TransactionStatus.INTRANS:
        conn.rollback()  # leave no read transaction open on a non-autocommit connection
    return ReplayPlan(criteria, up_to_seq, int(counted[0]) if counted else 0, first)


def replay(
    conn: psycopg.Connection,
    plan: ReplayPlan,
    requested_by: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rate: float | None = None,
    on_batch: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayResult:
    """Insert the replay rows of ``plan`` in batches, each its own transaction.

    ``rate`` (events per second) throttles: batches hold at most ``rate`` rows and the
    replay sleeps so that each batch takes at least ``rows / rate`` seconds. ``on_batch``
    is told the running total after each committed batch. ``conn`` must not be inside a
    transaction, since every batch commits. Returns the audit row's id, the rows emitted
    and the batches committed. Raises :class:`ValueError` when ``conn`` is inside a
    transaction, ``batch_size`` < 1 or ``rate`` <= 0.
    """
    _check_replay(conn, batch_size, rate)
    limit = batch_size if rate is None else max(1, min(batch_size, int(rate)))
    where, params = plan.criteria.where(plan.up_to_seq)
    statement = _BATCH.format(copied=_COPIED, where=where)
    criteria = {**plan.criteria.as_json(), **({"rate": rate} if rate is not None else {})}
    replay_id: int | None = None
    after, emitted, batches = 0, 0, 0
    while True:
        started = time.monotonic()
        with conn.transaction():
            count, last_seq = _insert_batch(conn, statement, {**params, "after": after}, limit)
            replay_id = _record(conn, replay_id, requested_by, criteria, count)
        batches += 1
        emitted += count
        if count and on_batch is not None:
            on_batch(emitted)
        if count < limit or last_seq is None:
            break
        after = int(last_seq)
        if rate is not None:
            sleep(max(0.0, count / rate - (time.monotonic() - started)))
    return ReplayResult(replay_id, emitted, batches)


def _check_replay(conn: psycopg.Connection, batch_size: int, rate: float | None) -> None:
    """Refuse what :func:`replay` cannot do.

    Raises :class:`ValueError` when ``conn`` is inside a transaction, ``batch_size`` < 1
    or ``rate`` <= 0.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("replay needs a connection outside any transaction")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")


def _insert_batch(
    conn: psycopg.Connection, statement: sql.Composed, params: dict[str, Any], limit: int
) -> tuple[int, Any]:
    """Insert the next at most ``limit`` replay rows: (rows inserted, last original seq)."""
    row = conn.execute(statement, {**params, "limit": limit}).fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def _record(
    conn: psycopg.Connection,
    replay_id: int | None,
    requested_by: str,
    criteria: dict[str, Any],
    count: int,
) -> int:
    """Audit a batch of ``count`` rows, in its transaction; return the ``outbox_replays`` id.

    The first batch inserts the audit row; later batches add their rows to its count.
    """
    if replay_id is None:
        return _audit(conn, requested_by, criteria, count)
    if count:
        conn.execute(_AUDIT_ADD, (count, replay_id))
    return replay_id


def _audit(
    conn: psycopg.Connection, requested_by: str, criteria: dict[str, Any], count: int
) -> int:
    row = conn.execute(_AUDIT, (requested_by, Jsonb(criteria), count)).fetchone()
    if row is None:  # pragma: no cover - INSERT … RETURNING always returns the row
        raise RuntimeError("the replay's audit row was not inserted")
    return int(row[0])
