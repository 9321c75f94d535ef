"""Apply a credit report: decide, store the decision once, and emit the decided event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from decision_worker.policy import decide
from outbox.append import OutboxMessage, append_sync
from outbox.consumer import PermanentFailure
from runtime.logging import get_logger
from schema.events import (
    CreditReportEvent,
    DecidedEvent,
    Envelope,
    EventType,
    LoanApplicationDecidedV1,
    derived_event_id,
)

CONSUMER_NAME = "decision-worker"
_log = get_logger(__name__)

# The WHERE clause is the guarantee that a decided application never changes again,
# whatever arrives later: only the PENDING → decided transition updates a row.
_DECIDE = """
    UPDATE applications
       SET status = %(status)s, cibil_score = %(score)s
     WHERE id = %(id)s AND status = 'PENDING'
 RETURNING created_at, client_id
"""


class DecisionHandler:
    """The decision worker's effect for one ``CreditReportGenerated`` event."""

    def __init__(self, decisions_topic: str) -> None:
        self._topic = decisions_topic

    def __call__(self, conn: psycopg.Connection, event: Envelope[Any]) -> None:
        """Decide and, on the PENDING → decided transition only, append the decided event."""
        if not isinstance(event, CreditReportEvent):
            raise PermanentFailure(f"decision worker does not handle {event.event_type.value}")
        report = event.data
        status = decide(report)
        row = conn.execute(
            _DECIDE,
            {"status": status.value, "score": report.cibil_score, "id": report.application_id},
        ).fetchone()
        if row is None:
            exists = conn.execute(
                "SELECT 1 FROM applications WHERE id = %s", (report.application_id,)
            ).fetchone()
            if exists is None:
                raise PermanentFailure(f"application {report.application_id} does not exist")
            return  # already decided: the first decision stands
        now = datetime.now(UTC)
        decided = DecidedEvent(
            event_id=derived_event_id(EventType.LOAN_APPLICATION_DECIDED, event.event_id),
            occurred_at=now,
            aggregate_id=report.application_id,
            correlation_id=event.correlation_id,
            causation_id=str(event.event_id),
            data=LoanApplicationDecidedV1(
                application_id=report.application_id,
                status=status,
                cibil_score=report.cibil_score,
                submitted_at=row[0],
                decided_at=now,
                client_id=row[1] or None,
            ),
        )
        append_sync(conn, OutboxMessage(decided, self._topic))
        _log.info(
            "application.decided",
            application_id=str(report.application_id),
            status=status.value,
            cibil_score=report.cibil_score,
        )
