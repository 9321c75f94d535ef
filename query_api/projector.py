"""Keep the ``application_status`` projection current from the submitted and decided events.

Idempotent through the inbox, and monotonic through ``version``: PENDING is version 1,
a decision is version 2, and an upsert only ever raises the version, so an old event
arriving late (a replay, a redelivery) never overwrites a newer state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import Histogram

from outbox.consumer import PermanentFailure
from schema.events import ApplicationStatus, DecidedEvent, Envelope, SubmittedEvent

CONSUMER_NAME = "query-projector"
DECISION_VISIBLE = Histogram(
    "prequal_submit_to_decision_visible_seconds",
    "From an application's submission to its decision being written to the read model.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PENDING_VERSION = 1
DECIDED_VERSION = 2

_UPSERT = """
    INSERT INTO application_status AS s
           (application_id, client_id, status, cibil_score, submitted_at, decided_at,
            updated_at, last_event_id, version)
    VALUES (%(id)s, %(client_id)s, %(status)s, %(score)s, %(submitted_at)s, %(decided_at)s,
            now(), %(event_id)s, %(version)s)
    ON CONFLICT (application_id) DO UPDATE
       SET status = EXCLUDED.status,
           cibil_score = EXCLUDED.cibil_score,
           decided_at = EXCLUDED.decided_at,
           updated_at = now(),
           last_event_id = EXCLUDED.last_event_id,
           version = EXCLUDED.version
     WHERE s.version < EXCLUDED.version
"""


def project(conn: psycopg.Connection, event: Envelope[Any]) -> None:
    """Apply one event to the projection, never moving an application backwards."""
    if isinstance(event, SubmittedEvent):
        params = {
            "id": event.data.application_id,
            "status": ApplicationStatus.PENDING.value,
            "score": None,
            "submitted_at": event.data.submitted_at,
            "decided_at": None,
            "event_id": event.event_id,
            "version": PENDING_VERSION,
            "client_id": event.data.client_id or "",
        }
    elif isinstance(event, DecidedEvent):
        params = {
            "id": event.data.application_id,
            "status": event.data.status.value,
            "score": event.data.cibil_score,
            "submitted_at": event.data.submitted_at,
            "decided_at": event.data.decided_at,
            "event_id": event.event_id,
            "version": DECIDED_VERSION,
            "client_id": event.data.client_id or "",
        }
    else:
        raise PermanentFailure(f"projector does not handle {event.event_type.value}")
    changed = conn.execute(_UPSERT, params).rowcount
    if changed and isinstance(event, DecidedEvent):
        # The product's own number: from the 202 to the decision being readable.
        DECISION_VISIBLE.observe((datetime.now(UTC) - event.data.submitted_at).total_seconds())
