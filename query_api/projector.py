"""Keep the ``application_status`` projection current from the submitted and decided events.

Idempotent through the inbox, and monotonic through ``version``: PENDING is version 1,
a decision is version 2, and an upsert only ever raises the version, so an old event
arriving late (a replay, a redelivery) never overwrites a newer state.
"""

from __future__ import annotations

from typing import Any

import psycopg

from outbox.consumer import PermanentFailure
from schema.events import ApplicationStatus, DecidedEvent, Envelope, SubmittedEvent

CONSUMER_NAME = "query-projector"
PENDING_VERSION = 1
DECIDED_VERSION = 2

_UPSERT = """
    INSERT INTO application_status AS s
           (application_id, status, cibil_score, submitted_at, decided_at, updated_at,
            last_event_id, version)
    VALUES (%(id)s, %(status)s, %(score)s, %(submitted_at)s, %(decided_at)s, now(),
            %(event_id)s, %(version)s)
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
        }
    else:
        raise PermanentFailure(f"projector does not handle {event.event_type.value}")
    conn.execute(_UPSERT, params)
