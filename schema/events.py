"""Versioned event contracts: the envelope every Kafka message carries, and the payloads.

The envelope is what a Kafka message's value decodes to, whichever relay delivered it.
Payloads are versioned by ``schema_version`` (see docs/architecture.md for how a version
evolves). Money is a ``Decimal`` serialised as a two-decimal JSON string, so no consumer
ever sees a binary float.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID, uuid5

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

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
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,10}\.[0-9]{2}$"}, mode="serialization"),
]
"""A positive INR amount that fits NUMERIC(12,2); a two-decimal JSON string on the wire."""

CibilScore = Annotated[int, Field(ge=300, le=900)]


class _Payload(BaseModel):
    # Unknown fields are ignored so that an additive change needs no new version: a
    # consumer built for version N keeps working when producers add optional fields.
    # Producers write every field, defaults and nulls included: the wire schema says so.
    model_config = ConfigDict(
        frozen=True, extra="ignore", json_schema_serialization_defaults_required=True
    )


class LoanApplicationSubmittedV1(_Payload):
    """Payload of ``LoanApplicationSubmitted`` v1: the application as accepted."""

    application_id: UUID
    pan_number: str = Field(pattern=r"^[A-Z]{5}[0-9]{4}[A-Z]$")
    applicant_name: str = Field(min_length=1, max_length=255)
    monthly_income_inr: Money
    loan_amount_inr: Money
    loan_type: LoanType
    submitted_at: AwareDatetime
    #: The OAuth client that submitted it (added in place: optional, so v1 still reads).
    client_id: str | None = None


class CreditReportGeneratedV1(_Payload):
    """Payload of ``CreditReportGenerated`` v1: the simulated CIBIL score and its inputs."""

    application_id: UUID
    cibil_score: CibilScore
    monthly_income_inr: Money
    loan_amount_inr: Money
    loan_type: LoanType
    generated_at: AwareDatetime


class LoanApplicationDecidedV1(_Payload):
    """Payload of ``LoanApplicationDecided`` v1: the final status of an application."""

    application_id: UUID
    status: Literal[
        ApplicationStatus.PRE_APPROVED, ApplicationStatus.REJECTED, ApplicationStatus.MANUAL_REVIEW
    ]
    cibil_score: CibilScore
    submitted_at: AwareDatetime
    decided_at: AwareDatetime
    #: The OAuth client that submitted the application (optional: older events lack it).
    client_id: str | None = None


P = TypeVar("P", bound=BaseModel)


class Envelope(BaseModel, Generic[P]):
    """The metadata every event carries, around its typed payload in ``data``."""

    # Producers write every field, defaults and nulls included: the wire schema says so.
    model_config = ConfigDict(
        frozen=True, extra="ignore", json_schema_serialization_defaults_required=True
    )

    event_id: UUID
    event_type: EventType
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    aggregate_id: UUID
    correlation_id: str = Field(min_length=1, max_length=128)
    causation_id: str | None = None
    data: P


class SubmittedEvent(Envelope[LoanApplicationSubmittedV1]):
    """The envelope of a submitted application (v1)."""

    event_type: Literal[EventType.LOAN_APPLICATION_SUBMITTED] = EventType.LOAN_APPLICATION_SUBMITTED
    schema_version: Literal[1] = 1


class CreditReportEvent(Envelope[CreditReportGeneratedV1]):
    """The envelope of a generated credit report (v1)."""

    event_type: Literal[EventType.CREDIT_REPORT_GENERATED] = EventType.CREDIT_REPORT_GENERATED
    schema_version: Literal[1] = 1


class DecidedEvent(Envelope[LoanApplicationDecidedV1]):
    """The envelope of a decided application (v1)."""

    event_type: Literal[EventType.LOAN_APPLICATION_DECIDED] = EventType.LOAN_APPLICATION_DECIDED
    schema_version: Literal[1] = 1


#: Every (type, version) a consumer of this build understands.
EVENT_MODELS: dict[tuple[EventType, int], type[Envelope[Any]]] = {
    (EventType.LOAN_APPLICATION_SUBMITTED, 1): SubmittedEvent,
    (EventType.CREDIT_REPORT_GENERATED, 1): CreditReportEvent,
    (EventType.LOAN_APPLICATION_DECIDED, 1): DecidedEvent,
}


class UndecodableEvent(ValueError):
    """A message that is not an event this build understands (it goes to the DLQ)."""


class _Header(BaseModel):
    model_config = ConfigDict(extra="ignore")
    event_type: str
    schema_version: int


def decode_event(raw: bytes | None) -> Envelope[Any]:
    """Decode a Kafka message value into its typed envelope.

    Raises :class:`UndecodableEvent` for anything that is not valid JSON, not an
    envelope, of an unknown type or version, or whose payload breaks its schema.
    """
    if not raw:
        raise UndecodableEvent("empty message value")
    try:
        header = _Header.model_validate_json(raw)
    except ValidationError as error:
        raise UndecodableEvent(f"not an event envelope: {_summary(error)}") from error
    try:
        model = EVENT_MODELS[(EventType(header.event_type), header.schema_version)]
    except (KeyError, ValueError) as error:
        raise UndecodableEvent(
            f"unsupported event {header.event_type!r} schema_version {header.schema_version}"
        ) from error
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise UndecodableEvent(
            f"invalid {header.event_type} v{header.schema_version}: {_summary(error)}"
        ) from error


def _summary(error: ValidationError) -> str:
    # Field paths and messages only: never the input values, which may carry a PAN.
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
        for e in error.errors(include_input=False, include_url=False)
    ]
    return "; ".join(parts[:5])


def derived_event_id(kind: EventType, source_event_id: UUID) -> UUID:
    """The stable id of an event derived from another, identical on every redelivery."""
    return uuid5(EVENT_NAMESPACE, f"{kind.value}:{source_event_id}")
