"""Initial schema: applications, outbox, replays audit, inbox, projection, idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS_CHECK = "status IN ('PENDING','PRE_APPROVED','REJECTED','MANUAL_REVIEW')"
_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table, index, trigger and notification of the first release."""
    op.create_table(
        "applications",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("pan_number", sa.String(10), nullable=False),
        sa.Column("applicant_name", sa.String(255), nullable=False),
        sa.Column("monthly_income_inr", sa.Numeric(12, 2), nullable=False),
        sa.Column("loan_amount_inr", sa.Numeric(12, 2), nullable=False),
        sa.Column("loan_type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cibil_score", sa.Integer, nullable=True),
        sa.Column("created_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("monthly_income_inr > 0", name="ck_applications_income_positive"),
        sa.CheckConstraint("loan_amount_inr > 0", name="ck_applications_amount_positive"),
        sa.CheckConstraint(_STATUS_CHECK, name="ck_applications_status"),
        sa.CheckConstraint(
            "loan_type IN ('PERSONAL','HOME','AUTO')", name="ck_applications_loan_type"
        ),
        sa.CheckConstraint(
            "cibil_score IS NULL OR cibil_score BETWEEN 300 AND 900",
            name="ck_applications_cibil_score",
        ),
    )
    op.create_index("ix_applications_pan_number", "applications", ["pan_number"])
    op.create_index("ix_applications_status", "applications", ["status"])
    op.create_index("ix_applications_created_at", "applications", ["created_at"])
    op.execute("""
        CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END $$
        """)
    op.execute("""
        CREATE TRIGGER applications_set_updated_at
        BEFORE UPDATE ON applications
        FOR EACH ROW EXECUTE FUNCTION set_updated_at()
        """)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("aggregatetype", sa.String(64), nullable=False),
        sa.Column("aggregateid", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=True),
        sa.Column("causation_id", sa.Text, nullable=True),
        sa.Column("traceparent", sa.Text, nullable=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("occurred_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", _TZ, nullable=True),
        sa.Column("replay_of", sa.Uuid, nullable=True),
    )
    op.create_index("ix_outbox_event_id", "outbox", ["event_id"])
    op.create_index("ix_outbox_occurred_at", "outbox", ["occurred_at"])
    # The relay's claim reads only unpublished rows in seq order: a partial index keeps
    # that scan proportional to the backlog, not to the retained history.
    op.create_index(
        "ix_outbox_unpublished_seq",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    # One notification per inserting statement wakes the polling relay within
    # milliseconds of the commit, whoever inserted (API, worker, replay).
    op.execute("""
        CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('prequal_outbox', '');
            RETURN NULL;
        END $$
        """)
    op.execute("""
        CREATE TRIGGER outbox_notify
        AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox()
        """)

    op.create_table(
        "outbox_replays",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("requested_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("criteria", JSONB, nullable=False),
        sa.Column("rows_emitted", sa.Integer, nullable=False),
    )

    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("processed_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
    )

    op.create_table(
        "application_status",
        sa.Column("application_id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cibil_score", sa.Integer, nullable=True),
        sa.Column("submitted_at", _TZ, nullable=False),
        sa.Column("decided_at", _TZ, nullable=True),
        sa.Column("updated_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("last_event_id", sa.Uuid, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.CheckConstraint(_STATUS_CHECK, name="ck_application_status_status"),
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("application_id", sa.Uuid, nullable=False),
        sa.Column("created_at", _TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", _TZ, nullable=False),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    """Drop everything the upgrade created, in reverse order."""
    op.drop_table("idempotency_keys")
    op.drop_table("application_status")
    op.drop_table("inbox")
    op.drop_table("outbox_replays")
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION notify_outbox()")
    op.drop_table("outbox")
    op.execute("DROP TRIGGER applications_set_updated_at ON applications")
    op.execute("DROP FUNCTION set_updated_at()")
    op.drop_table("applications")
