"""Alarms of the live loop, raised once per policy version and monitor across replicas; webhook events that
announce an alarm belong to no decision; when a policy version last became active (its monitors watch from then).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("policy_version", sa.String(128), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("raised_at", sa.Float, nullable=False),
        sa.Column("says", sa.String(512), nullable=False),
        sa.Column("evidence", sa.Float, nullable=False),
        sa.Column("action", sa.String(128), nullable=True),
        sa.Column("cleared_at", sa.Float, nullable=True),
        sa.Column("cleared_by", sa.String(64), nullable=True),
        sa.UniqueConstraint("policy_version", "name", name="uq_alarms_policy_name"),
    )
    with op.batch_alter_table("events") as batch:
        batch.alter_column(
            "decision_id", existing_type=sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=True
        )
    with op.batch_alter_table("policies") as batch:
        batch.add_column(sa.Column("activated_at", sa.Float, nullable=True))


def downgrade() -> None:
    op.drop_table("alarms")
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("activated_at")
    with op.batch_alter_table("events") as batch:
        batch.alter_column(
            "decision_id", existing_type=sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False
        )
