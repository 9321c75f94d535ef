"""Apply a credit report: decide, store the decision once, and emit the decided event."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg

from decision_worker.policy import decide
from messaging.consumer import PermanentFailure
from messaging.tracing import event_span, event_traceparent
from outbox.append import OutboxMessage, append_sync
from runtime.logging import get_logger
from schema.events import (
    ApplicationStatus,
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
    UPDATE applications AS a
       SET status = d.status, cibil_score = d.score
      FROM unnest(%(ids)s::uuid[], %(statuses)s::text[], %(scores)s::int[]) AS d(id, status, score)
     WHERE a.id = d.id AND a.status = 'PENDING'
 RETURNING a.id, a.created_at, a.client_id
"""


class DecisionHandler:
    """The decision worker's effect for a set of new ``CreditReportGenerated`` events."""

    def __init__(self, decisions_topic: str) -> None:
        self._topic = decisions_topic

    def __call__(self, conn: psycopg.Connection, events: Sequence[Envelope[Any]]) -> None:
        """Decide each application; on the PENDING → decided transition, append its event.

        One UPDATE for the set and one outbox INSERT for the decided ones; each decided
        event's outbox row carries the ``traceparent`` its report's message continues
        (:func:`messaging.tracing.event_traceparent`). Raises
        :class:`PermanentFailure` for an event that is no credit report, or whose
        application does not exist.
        """
        first: dict[UUID, CreditReportEvent] = {}
        for event in events:
            if not isinstance(event, CreditReportEvent):
                raise PermanentFailure(f"decision worker does not handle {event.event_type.value}")
            # Two reports for one application: the first decides, as if one after the other.
            first.setdefault(event.data.application_id, event)
        reports = list(first.values())
        statuses = [decide(event.data) for event in reports]
        decided = {
            row[0]: (row[1], row[2])
            for row in conn.execute(
                _DECIDE,
                {
                    "ids": [event.data.application_id for event in reports],
                    "statuses": [status.value for status in statuses],
                    "scores": [event.data.cibil_score for event in reports],
                },
            )
        }
        if len(decided) < len(reports):
            self._require_existing(
                conn, [e for e in reports if e.data.application_id not in decided]
            )
        now = datetime.now(UTC)
        decisions = [
            (
                event.event_id,
                OutboxMessage(
                    self._decided(event, status, *decided[event.data.application_id], now),
                    self._topic,
                    # The report's message span (or, tracing off, the report's own
                    # traceparent): the decision continues the application's trace.
                    traceparent=event_traceparent(event.event_id),
                ),
            )
            for event, status in zip(reports, statuses, strict=True)
            if event.data.application_id in decided
        ]
        append_sync(conn, *(message for _, message in decisions))
        # At INFO one line per batch, with the count of each status: a line per decision
        # cost more CPU than deciding it (issue 17). At DEBUG, one line per decision with
        # its correlation id, inside the report's message span (so its trace_id is the
        # application's): the trail from a request to its decision. Both are written
        # before the commit, so a batch rolled back (a retry, or a probe for a poison
        # message) logs again; prequal_consumer_messages_total counts what committed.
        _log.info(
            "decisions.written",
            count=len(decisions),
            **Counter(message.envelope.data.status.value for _, message in decisions),
        )
        if _log.is_enabled_for(logging.DEBUG):
            for report_id, message in decisions:
                with event_span(report_id):
                    _log.debug(
                        "application.decided",
                        application_id=str(message.envelope.aggregate_id),
                        status=message.envelope.data.status.value,
                        correlation_id=message.envelope.correlation_id,
                    )

    @staticmethod
    def _require_existing(conn: psycopg.Connection, undecided: list[CreditReportEvent]) -> None:
        """Raise for the first report whose application does not exist; others were decided."""
        ids = [event.data.application_id for event in undecided]
        existing = {
            row[0] for row in conn.execute("SELECT id FROM applications WHERE id = ANY(%s)", (ids,))
        }
        for application_id in ids:
            if application_id not in existing:
                raise PermanentFailure(f"application {application_id} does not exist")

    @staticmethod
    def _decided(
        event: CreditReportEvent,
        status: ApplicationStatus,
        submitted_at: datetime,
        client_id: str,
        now: datetime,
    ) -> DecidedEvent:
        report = event.data
        return DecidedEvent(
            event_id=derived_event_id(EventType.LOAN_APPLICATION_DECIDED, event.event_id),
            occurred_at=now,
            aggregate_id=report.application_id,
            correlation_id=event.correlation_id,
            causation_id=str(event.event_id),
            data=LoanApplicationDecidedV1(
                application_id=report.application_id,
                status=status,
                cibil_score=report.cibil_score,
                submitted_at=submitted_at,
                decided_at=now,
                client_id=client_id or None,
            ),
        )
