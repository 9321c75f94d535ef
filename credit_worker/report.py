"""Turn a submitted application into its credit report event (pure: no I/O)."""

from __future__ import annotations

from datetime import datetime

from credit_worker.scoring import score
from schema.events import (
    CreditReportEvent,
    CreditReportGeneratedV1,
    EventType,
    SubmittedEvent,
    derived_event_id,
)


def credit_report(event: SubmittedEvent, now: datetime) -> CreditReportEvent:
    """The report for ``event``; its id and score are the same on every redelivery."""
    application = event.data
    return CreditReportEvent(
        event_id=derived_event_id(EventType.CREDIT_REPORT_GENERATED, event.event_id),
        occurred_at=now,
        aggregate_id=application.application_id,
        correlation_id=event.correlation_id,
        causation_id=str(event.event_id),
        data=CreditReportGeneratedV1(
            application_id=application.application_id,
            cibil_score=score(application),
            monthly_income_inr=application.monthly_income_inr,
            loan_amount_inr=application.loan_amount_inr,
            loan_type=application.loan_type,
            generated_at=now,
        ),
    )
