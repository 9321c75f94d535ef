"""Append an event to the outbox inside the caller's transaction.

The caller owns the transaction: this module never commits. A statement-level trigger
on the outbox notifies the relay at commit time, so appending needs nothing else. The
APIs append through SQLAlchemy (async); the workers through a plain psycopg connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel
from sqlalchemy import Insert, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from schema.events import Envelope
from schema.tables import outbox


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One event bound for one topic, keyed by its aggregate (the application id)."""

    envelope: Envelope[Any]
    topic: str
    aggregate_type: str = "application"
    traceparent: str | None = None

    def row(self) -> dict[str, Any]:
        """The outbox row's column values."""
        env = self.envelope
        return {
            "event_id": env.event_id,
            "aggregatetype": self.aggregate_type,
            "aggregateid": str(env.aggregate_id),
            "type": env.event_type.value,
            "topic": self.topic,
            "payload": _json_payload(env),
            "correlation_id": env.correlation_id,
            "causation_id": env.causation_id,
            "traceparent": self.traceparent,
            "occurred_at": env.occurred_at,
        }


def _json_payload(envelope: BaseModel) -> Any:
    # JSON mode turns Decimal into str and UUID/datetime into strings, as on the wire.
    return envelope.model_dump(mode="json")


def insert_statement(messages: list[OutboxMessage]) -> Insert:
    """One multi-row INSERT for ``messages`` (not executed)."""
    return insert(outbox).values([m.row() for m in messages])


async def append(conn: AsyncConnection, *messages: OutboxMessage) -> None:
    """Insert ``messages`` into the outbox in the transaction ``conn`` is in."""
    if messages:
        await conn.execute(insert_statement(list(messages)))


#: The outbox columns every writer fills (the rest have defaults).
OUTBOX_COLUMNS = (
    "event_id",
    "aggregatetype",
    "aggregateid",
    "type",
    "topic",
    "payload",
    "correlation_id",
    "causation_id",
    "traceparent",
    "occurred_at",
)
_INSERT_SQL = (
    f"INSERT INTO outbox ({', '.join(OUTBOX_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join(f'%({c})s' for c in OUTBOX_COLUMNS)})"
)


def append_sync(conn: psycopg.Connection, *messages: OutboxMessage) -> None:
    """Insert ``messages`` into the outbox in the transaction ``conn`` is in."""
    rows = []
    for message in messages:
        row = message.row()
        row["payload"] = Jsonb(row["payload"])
        rows.append(row)
    if rows:
        with conn.cursor() as cursor:
            cursor.executemany(_INSERT_SQL, rows)
