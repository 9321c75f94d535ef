"""Build events and rows the way the services do, for arranging tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from schema.events import (
    ApplicationStatus,
    CreditReportEvent,
    CreditReportGeneratedV1,
    DecidedEvent,
    EventType,
    LoanApplicationDecidedV1,
    LoanApplicationSubmittedV1,
    LoanType,
    SubmittedEvent,
    derived_event_id,
)


def submitted_event(
    application_id: uuid.UUID | None = None,
    pan: str = "KLMNO1234P",
    income: str = "75000.00",
    amount: str = "500000.00",
    loan_type: LoanType = LoanType.PERSONAL,
    correlation_id: str = "corr-test",
) -> SubmittedEvent:
    """A LoanApplicationSubmitted event as the command API writes it."""
    application_id = application_id or uuid.uuid4()
    now = datetime.now(UTC)
    return SubmittedEvent(
        event_id=uuid.uuid4(),
        occurred_at=now,
        aggregate_id=application_id,
        correlation_id=correlation_id,
        causation_id=correlation_id,
        data=LoanApplicationSubmittedV1(
            application_id=application_id,
            pan_number=pan,
            applicant_name="Test Applicant",
            monthly_income_inr=Decimal(income),
            loan_amount_inr=Decimal(amount),
            loan_type=loan_type,
            submitted_at=now,
        ),
    )


def credit_report_event(
    application_id: uuid.UUID, score: int, income: str = "75000.00", amount: str = "500000.00"
) -> CreditReportEvent:
    """A CreditReportGenerated event as the credit worker produces it."""
    now = datetime.now(UTC)
    source = uuid.uuid4()
    return CreditReportEvent(
        event_id=derived_event_id(EventType.CREDIT_REPORT_GENERATED, source),
        occurred_at=now,
        aggregate_id=application_id,
        correlation_id="corr-test",
        causation_id=str(source),
        data=CreditReportGeneratedV1(
            application_id=application_id,
            cibil_score=score,
            monthly_income_inr=Decimal(income),
            loan_amount_inr=Decimal(amount),
            loan_type=LoanType.PERSONAL,
            generated_at=now,
        ),
    )


def decided_event(submitted: SubmittedEvent, status: ApplicationStatus, score: int) -> DecidedEvent:
    """A LoanApplicationDecided event for ``submitted``."""
    return DecidedEvent(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        aggregate_id=submitted.aggregate_id,
        correlation_id=submitted.correlation_id,
        causation_id=str(uuid.uuid4()),
        data=LoanApplicationDecidedV1(
            application_id=submitted.data.application_id,
            status=status,
            cibil_score=score,
            submitted_at=submitted.data.submitted_at,
            decided_at=datetime.now(UTC),
        ),
    )


def insert_application(
    db: psycopg.Connection, income: str = "75000.00", amount: str = "500000.00"
) -> uuid.UUID:
    """A PENDING application row, as the command API stores it."""
    application_id = uuid.uuid4()
    db.execute(
        "INSERT INTO applications (id, pan_number, applicant_name, monthly_income_inr,"
        " loan_amount_inr, loan_type, status, created_at, updated_at)"
        " VALUES (%s, 'KLMNO1234P', 'Test Applicant', %s, %s, 'PERSONAL', 'PENDING', now(), now())",
        (application_id, Decimal(income), Decimal(amount)),
    )
    return application_id
