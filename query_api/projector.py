"""Keep the ``application_status`` projection current from the submitted and decided events.

One upsert per batch. Idempotent through the inbox, and monotonic through ``version``:
PENDING is version 1, a decision is version 2, and an upsert only ever raises the
version, so an old event arriving late (a replay, a redelivery) never overwrites a newer
state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from prometheus_client import Histogram

from messaging.consumer import PermanentFailure
from schema.events import ApplicationStatus, DecidedEvent, Envelope, SubmittedEvent

CONSUMER_NAME = "query-projector"
DECISION_VISIBLE = Histogram(
    "prequal_submit_to_decision_visible_seconds",
    "From an application's submission to its decision being written to the read model.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PENDING_VERSION = 1
DECIDED_VERSION = 2

# One row per application (the newest event of the batch); the WHERE clause keeps the
# projection monotonic against what is already stored.
_UPSERT = """
    INSERT INTO application_status AS s
           (application_id, client_id, status, cibil_score, submitted_at, decided_at,
            updated_at, last_event_id, version)
    SELECT id, client_id, status, score, submitted_at, decided_at, now(), event_id, version
      FROM unnest(%(ids)s::uuid[], %(client_ids)s::text[], %(statuses)s::text[],
                  %(scores)s::int[], %(submitted_at)s::timestamptz[],
                  %(decided_at)s::timestamptz[], %(event_ids)s::uuid[], %(versions)s::int[])
           AS e(id, client_id, status, score, submitted_at, decided_at, event_id, version)
    ON CONFLICT (application_id) DO UPDATE
       SET status = EXCLUDED.status,
           cibil_score = EXCLUDED.cibil_score,
           decided_at = EXCLUDED.decided_at,
           updated_at = now(),
           last_event_id = EXCLUDED.last_event_id,
           version = EXCLUDED.version
     WHERE s.version < EXCLUDED.version
 RETURNING s.version, s.submitted_at
"""


@dataclass(frozen=True, slots=True)
class _Row:
    """One event as the projection row it would write."""

    id: UUID
    client_id: str
    status: str
    score: int | None
    submitted_at: datetime
    decided_at: datetime | None
    event_id: UUID
    version: int


def _row(event: Envelope[Any]) -> _Row:
    if isinstance(event, SubmittedEvent):
        return _Row(
            event.data.application_id,
            event.data.client_id or "",
            ApplicationStatus.PENDING.value,
            None,
            event.data.submitted_at,
            None,
            event.event_id,
            PENDING_VERSION,
        )
    if isinstance(event, DecidedEvent):
        return _Row(
            event.data.application_id,
            event.data.client_id or "",
            event.data.status.value,
            event.data.cibil_score,
            event.data.submitted_at,
            event.data.decided_at,
            event.event_id,
            DECIDED_VERSION,
        )
    raise PermanentFailure(f"projector does not handle {event.event_type.value}")


def project(conn: psycopg.Connection, events: Sequence[Envelope[Any]]) -> None:
    """Apply ``events`` to the projection in one upsert, never moving an application back.

    Raises :class:`PermanentFailure` for an event the projection does not handle.
    """
    newest: dict[UUID, _Row] = {}
    for event in events:
        row = _row(event)
        # Within the batch the highest version wins, the first of equal ones: as if the
        # events were applied one by one (an upsert cannot touch one row twice).
        if row.id not in newest or row.version > newest[row.id].version:
            newest[row.id] = row
    rows = list(newest.values())
    written = conn.execute(
        _UPSERT,
        {
            "ids": [r.id for r in rows],
            "client_ids": [r.client_id for r in rows],
            "statuses": [r.status for r in rows],
            "scores": [r.score for r in rows],
            "submitted_at": [r.submitted_at for r in rows],
            "decided_at": [r.decided_at for r in rows],
            "event_ids": [r.event_id for r in rows],
            "versions": [r.version for r in rows],
        },
    ).fetchall()
    now = datetime.now(UTC)
    for version, submitted_at in written:
        if version == DECIDED_VERSION:
            # The product's own number: from the 202 to the decision being readable.
            DECISION_VISIBLE.observe((now - submitted_at).total_seconds())
