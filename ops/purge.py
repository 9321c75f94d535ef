"""Purge: delete published outbox rows past their retention, and expired idempotency keys.

Only rows with ``published_at`` set and older than the cut-off are deleted; an
unpublished row is never touched, whatever its age (it is still waiting for a relay).
Rows are deleted in ``seq`` order, in batches, each batch its own transaction, so a
large purge never holds long locks or one huge transaction. Deletes are invisible to
Kafka: the Debezium publication publishes inserts only.

The same command also deletes expired ``idempotency_keys`` (``expires_at`` before the
moment the purge was planned), batched the same way; the API already treats an expired
key as absent, so this only reclaims space. Both counts are reported.

A purge is planned first (:func:`plan_purge`: cut-offs fixed and rows counted; this is
the dry run) and then carried out with the same cut-offs (:func:`purge`), so what is
deleted is what the operator confirmed.

Purged originals can no longer be replayed: the retention chosen here bounds how far
back ``prequal-ops outbox replay`` can reach.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

DEFAULT_BATCH_SIZE = 1000

_DURATION = re.compile(r"(?P<amount>[1-9][0-9]{0,5})(?P<unit>[smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

_CUTOFFS = "SELECT now() - %s::interval, now()"
_COUNT_OUTBOX = "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND published_at < %s"
_COUNT_KEYS = "SELECT count(*) FROM idempotency_keys WHERE expires_at < %s"
# The outer condition is repeated so that a row changed meanwhile is re-checked.
_DELETE_OUTBOX = """
    DELETE FROM outbox
     WHERE id IN (SELECT id FROM outbox
                   WHERE published_at IS NOT NULL AND published_at < %(cutoff)s
                   ORDER BY seq LIMIT %(limit)s)
       AND published_at IS NOT NULL AND published_at < %(cutoff)s
"""
_DELETE_KEYS = """
    DELETE FROM idempotency_keys
     WHERE key IN (SELECT key FROM idempotency_keys
                    WHERE expires_at < %(cutoff)s
                    ORDER BY expires_at LIMIT %(limit)s)
       AND expires_at < %(cutoff)s
"""


def parse_duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m`` or ``45s``: a positive whole number and one unit, nothing else."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use a positive whole number and one unit "
            "of s, m, h or d (e.g. 7d, 12h, 30m)"
        )
    return timedelta(**{_UNITS[match["unit"]]: int(match["amount"])})


@dataclass(frozen=True)
class PurgePlan:
    """The cut-offs of a purge and how many rows they select now."""

    older_than: timedelta
    cutoff: datetime
    keys_cutoff: datetime
    outbox_rows: int
    idempotency_keys: int

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "older_than_s": int(self.older_than.total_seconds()),
            "cutoff": self.cutoff.isoformat(),
            "keys_cutoff": self.keys_cutoff.isoformat(),
            "outbox_rows": self.outbox_rows,
            "idempotency_keys": self.idempotency_keys,
        }


@dataclass(frozen=True)
class PurgeResult:
    """What a purge deleted."""

    outbox_rows: int
    idempotency_keys: int
    batches: int


def plan_purge(conn: psycopg.Connection, older_than: timedelta) -> PurgePlan:
    """Fix the cut-offs (database clock) and count what they select; deletes nothing."""
    if older_than <= timedelta(0):
        raise ValueError("older_than must be positive")
    cutoffs = conn.execute(_CUTOFFS, (older_than,)).fetchone()
    if cutoffs is None:  # pragma: no cover - SELECT without FROM returns one row
        raise RuntimeError("the database returned no clock")
    cutoff, keys_cutoff = cutoffs
    outbox_rows = conn.execute(_COUNT_OUTBOX, (cutoff,)).fetchone()
    keys = conn.execute(_COUNT_KEYS, (keys_cutoff,)).fetchone()
    if conn.info.transaction_status == TransactionStatus.INTRANS:
        conn.rollback()  # leave no read transaction open on a non-autocommit connection
    return PurgePlan(
        older_than,
        cutoff,
        keys_cutoff,
        int(outbox_rows[0]) if outbox_rows else 0,
        int(keys[0]) if keys else 0,
    )


def purge(
    conn: psycopg.Connection,
    plan: PurgePlan,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int, int], None] | None = None,
) -> PurgeResult:
    """Delete what ``plan`` selects, ``batch_size`` rows per transaction.

    ``on_batch`` is told the running totals (outbox rows, keys) after each batch.
    ``conn`` must not be inside a transaction, since every batch commits.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("purge needs a connection outside any transaction")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    totals = {"outbox": 0, "keys": 0}
    batches = 0
    for name, statement, cutoff in (
        ("outbox", _DELETE_OUTBOX, plan.cutoff),
        ("keys", _DELETE_KEYS, plan.keys_cutoff),
    ):
        while True:
            with conn.transaction():
                deleted = conn.execute(statement, {"cutoff": cutoff, "limit": batch_size}).rowcount
            batches += 1
            totals[name] += deleted
            if deleted and on_batch is not None:
                on_batch(totals["outbox"], totals["keys"])
            if deleted < batch_size:
                break
    return PurgeResult(totals["outbox"], totals["keys"], batches)
