"""The closed loop: review verdicts (none of these, can't tell), skips, final-answer outcome rows, a webhook
outbox, and policies bound to the model they were fitted for.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("verdict", sa.String(16), nullable=False, server_default="class"))
        batch.alter_column("label", existing_type=sa.Integer, nullable=True)
    with op.batch_alter_table("policies") as batch:
        batch.add_column(sa.Column("model_version", sa.String(256), nullable=True))
    op.create_index("ix_policies_model_version", "policies", ["model_version"])
    op.create_table(
        "skips",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("review_tasks.id"), nullable=False, index=True),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id"), nullable=False, index=True),
        sa.Column("item_id", sa.String(256), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("label", sa.Integer, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("method", sa.String(16), nullable=True),
        sa.Column("n_labels", sa.Integer, nullable=False),
        sa.Column("closed", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(256), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id"), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=True, index=True),
        sa.Column("locked_until", sa.Float, nullable=True),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sa.Column("last_error", sa.String(256), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("outcomes")
    op.drop_table("skips")
    op.drop_index("ix_policies_model_version", "policies")
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("model_version")
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("verdict")
        batch.alter_column("label", existing_type=sa.Integer, nullable=False)
