"""Access control: owners of applications, rows and keys; a token bucket per client.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``client_id`` (rows from before belong to no client: ''), key per client."""
    for table in ("applications", "application_status"):
        op.add_column(table, sa.Column("client_id", sa.Text, nullable=False, server_default=""))
    op.add_column(
        "idempotency_keys", sa.Column("client_id", sa.Text, nullable=False, server_default="")
    )
    op.drop_constraint("idempotency_keys_pkey", "idempotency_keys", type_="primary")
    op.create_primary_key("idempotency_keys_pkey", "idempotency_keys", ["client_id", "key"])
    # UNLOGGED: a bucket is soft state (lost in a crash, it simply starts full again),
    # and a commit that wrote no WAL waits for no WAL flush: taking a token stays cheap.
    op.create_table(
        "client_rate_limits",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("tokens", sa.Double, nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    """Back to one key space and no owners (keys of several clients collide: dropped)."""
    op.drop_table("client_rate_limits")
    op.execute(
        "DELETE FROM idempotency_keys k USING idempotency_keys o"
        " WHERE k.key = o.key AND k.client_id > o.client_id"
    )
    op.drop_constraint("idempotency_keys_pkey", "idempotency_keys", type_="primary")
    op.create_primary_key("idempotency_keys_pkey", "idempotency_keys", ["key"])
    op.drop_column("idempotency_keys", "client_id")
    for table in ("applications", "application_status"):
        op.drop_column(table, "client_id")
