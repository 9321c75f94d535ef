"""What an operator needs to know about the outbox, read from PostgreSQL."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from outbox.relay import RELAY_LOCK_ID

_COUNTS = """
    SELECT count(*) FILTER (WHERE published_at IS NULL),
           extract(epoch FROM now() - min(occurred_at) FILTER (WHERE published_at IS NULL)),
           count(*) FILTER (WHERE published_at > now() - interval '1 minute'),
           count(*)
      FROM outbox
"""
_LOCK_HOLDER = """
    SELECT a.application_name
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted
       AND ((l.classid::bigint << 32) | l.objid::bigint) = %s
"""
_SLOT = """
    SELECT active,
           pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
           pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
      FROM pg_replication_slots WHERE slot_name = %s AND database = current_database()
"""


@dataclass(frozen=True)
class SlotStatus:
    """A logical replication slot: is a reader attached, and how much WAL it pins."""

    name: str
    active: bool
    retained_wal_bytes: int
    unconfirmed_wal_bytes: int


@dataclass(frozen=True)
class OutboxStatus:
    """The outbox at a glance."""

    pending: int
    oldest_pending_age_s: float | None
    published_last_minute: int
    total_rows: int
    active_relay: str | None
    slot: SlotStatus | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def outbox_status(conn: psycopg.Connection, slot_name: str) -> OutboxStatus:
    """Read the outbox's status (and the CDC slot's, if it exists)."""
    counts = conn.execute(_COUNTS).fetchone() or (0, None, 0, 0)
    holder = conn.execute(_LOCK_HOLDER, (RELAY_LOCK_ID,)).fetchone()
    slot_row = conn.execute(_SLOT, (slot_name,)).fetchone()
    slot = (
        SlotStatus(slot_name, bool(slot_row[0]), int(slot_row[1] or 0), int(slot_row[2] or 0))
        if slot_row
        else None
    )
    return OutboxStatus(
        pending=int(counts[0]),
        oldest_pending_age_s=None if counts[1] is None else round(float(counts[1]), 3),
        published_last_minute=int(counts[2]),
        total_rows=int(counts[3]),
        active_relay=holder[0] if holder else None,
        slot=slot,
    )
