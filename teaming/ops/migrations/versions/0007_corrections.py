"""A reviewer may correct their own answer within a window: the answer row keeps what they first said and when
they last corrected it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("corrected_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("first_verdict", sa.String(16), nullable=True))
        batch.add_column(sa.Column("first_label", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("first_label")
        batch.drop_column("first_verdict")
        batch.drop_column("corrected_at")
