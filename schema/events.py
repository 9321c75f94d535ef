"""Versioned event contracts: the envelope every Kafka message carries, and the payloads.

The envelope is what a Kafka message's value decodes to, whichever relay delivered it.
Payloads are versioned by ``schema_version``; money is a ``Decimal`` serialised as a JSON
string so that no consumer ever sees a binary float.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Generic, Literal, TypeVar
from uuid import UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

#: Namespace of derived event ids: ``uuid5(EVENT_NAMESPACE, f"{kind}:{source_event_id}")``.
EVENT_NAMESPACE = UUID("6f1c3a52-8a7e-4f0e-9d8b-2b1d6a4e7c10")


class LoanType(StrEnum):
    """The kinds of loan a prequalification may be asked for."""

    PERSONAL = "PERSONAL"
    HOME = "HOME"
    AUTO = "AUTO"


class ApplicationStatus(StrEnum):
    """Where an application stands; every status but PENDING is final."""

    PENDING = "PENDING"
    PRE_APPROVED = "PRE_APPROVED"
    REJECTED = "REJECTED"
    MANUAL_REVIEW = "MANUAL_REVIEW"


class EventType(StrEnum):
    """The event types that flow through the outbox and Kafka."""

    LOAN_APPLICATION_SUBMITTED = "LoanApplicationSubmitted"
    CREDIT_REPORT_GENERATED = "CreditReportGenerated"
    LOAN_APPLICATION_DECIDED = "LoanApplicationDecided"


PAISA = Decimal("0.01")


def money_text(value: Decimal) -> str:
    """The wire form of an amount: always two decimals (``75000.00``)."""
    return str(value.quantize(PAISA))


Money = Annotated[
    Decimal,
    Field(gt=0, max_digits=12, decimal_places=2),
    PlainSerializer(money_text, return_type=str, when_used="json"),
]
"""A positive INR amount that fits NUMERIC(12,2); a two-decimal JSON string on the wire."""


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoanApplicationSubmittedV1(_Payload):
    """Payload of ``LoanApplicationSubmitted`` version 1: the application as accepted."""

    application_id: UUID
    pan_number: str = Field(pattern=r"^[A-Z]{5}[0-9]{4}[A-Z]$")
    applicant_name: str = Field(min_length=1, max_length=255)
    monthly_income_inr: Money
    loan_amount_inr: Money
    loan_type: LoanType
    submitted_at: datetime


P = TypeVar("P", bound=BaseModel)


class Envelope(BaseModel, Generic[P]):
    """The metadata every event carries, around its typed payload in ``data``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    event_type: EventType
    schema_version: int = Field(ge=1)
    occurred_at: datetime
    aggregate_id: UUID
    correlation_id: str
    causation_id: str | None = None
    data: P


class SubmittedEvent(Envelope[LoanApplicationSubmittedV1]):
    """The envelope of a submitted application."""

    event_type: Literal[EventType.LOAN_APPLICATION_SUBMITTED] = EventType.LOAN_APPLICATION_SUBMITTED
    schema_version: Literal[1] = 1


def derived_event_id(kind: str, source_event_id: UUID) -> UUID:
    """The stable id of an event derived from another, identical on every redelivery."""
    return uuid5(EVENT_NAMESPACE, f"{kind}:{source_event_id}")
