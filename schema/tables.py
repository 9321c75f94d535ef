"""SQLAlchemy Core definitions of every table, mirroring the Alembic migrations.

The migrations own the schema; these definitions exist so that queries are written
against typed columns instead of strings. A contract test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

applications = Table(
    "applications",
    metadata,
    Column("id", Uuid, primary_key=True),
    # The OAuth client (azp, or sub) that submitted it: only that client reads it.
    Column("client_id", Text, nullable=False, server_default=""),
    Column("pan_number", String(10), nullable=False, index=True),
    Column("applicant_name", String(255), nullable=False),
    Column("monthly_income_inr", Numeric(12, 2), nullable=False),
    Column("loan_amount_inr", Numeric(12, 2), nullable=False),
    Column("loan_type", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("cibil_score", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("monthly_income_inr > 0", name="ck_applications_income_positive"),
    CheckConstraint("loan_amount_inr > 0", name="ck_applications_amount_positive"),
    CheckConstraint(
        "status IN ('PENDING','PRE_APPROVED','REJECTED','MANUAL_REVIEW')",
        name="ck_applications_status",
    ),
    CheckConstraint("loan_type IN ('PERSONAL','HOME','AUTO')", name="ck_applications_loan_type"),
    CheckConstraint(
        "cibil_score IS NULL OR cibil_score BETWEEN 300 AND 900",
        name="ck_applications_cibil_score",
    ),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("event_id", Uuid, nullable=False, index=True),
    Column("aggregatetype", String(64), nullable=False),
    Column("aggregateid", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("topic", String(249), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("correlation_id", Text, nullable=True),
    Column("causation_id", Text, nullable=True),
    Column("traceparent", Text, nullable=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("replay_of", Uuid, nullable=True),
    Index("ix_outbox_occurred_at", "occurred_at"),
    Index("ix_outbox_unpublished_seq", "seq", postgresql_where=text("published_at IS NULL")),
)

outbox_replays = Table(
    "outbox_replays",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("requested_by", Text, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("criteria", JSONB, nullable=False),
    Column("rows_emitted", Integer, nullable=False),
)

inbox = Table(
    "inbox",
    metadata,
    Column("consumer", String(64), nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
)

application_status = Table(
    "application_status",
    metadata,
    Column("application_id", Uuid, primary_key=True),
    Column("client_id", Text, nullable=False, server_default=""),
    Column("status", String(16), nullable=False),
    Column("cibil_score", Integer, nullable=True),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_event_id", Uuid, nullable=True),
    Column("version", Integer, nullable=False),
    CheckConstraint(
        "status IN ('PENDING','PRE_APPROVED','REJECTED','MANUAL_REVIEW')",
        name="ck_application_status_status",
    ),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # Keys are per client: two clients may use the same key.
    Column("client_id", Text, primary_key=True, server_default=""),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("application_id", Uuid, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

client_rate_limits = Table(
    "client_rate_limits",
    metadata,
    # One token bucket per client (runtime.rate_limit), shared by every API instance.
    Column("client_id", Text, primary_key=True),
    Column("tokens", Double, nullable=False),
    Column("refilled_at", DateTime(timezone=True), nullable=False),
    prefixes=["UNLOGGED"],
)

relay_handover = Table(
    "relay_handover",
    metadata,
    Column("slot_name", Text, primary_key=True),
    Column("up_to_seq", BigInteger, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)
