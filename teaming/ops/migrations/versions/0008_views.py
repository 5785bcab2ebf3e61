"""What a reviewer was shown: a task records the view its holder was given (blind, or a prediction set shown
lenient or strict), and each answer the view it was given under.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("review_tasks", "reviews"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("view", sa.String(16), nullable=False, server_default="blind"))


def downgrade() -> None:
    for table in ("reviews", "review_tasks"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("view")
