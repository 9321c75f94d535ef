"""Relay hand-over state: how far the CDC confirmer's catch-up must publish.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``relay_handover``."""
    op.create_table(
        "relay_handover",
        sa.Column("slot_name", sa.Text, primary_key=True),
        sa.Column("up_to_seq", sa.BigInteger, nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    """Drop ``relay_handover``."""
    op.drop_table("relay_handover")
