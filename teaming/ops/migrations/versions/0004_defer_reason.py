"""Why an item was deferred ("unsure" or "unfamiliar"), the model's unfamiliarity score and the score the policy
compared with its threshold, per decision (retune re-chooses a learned policy's threshold on it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("defer_reason", sa.String(16), nullable=True))
        batch.add_column(sa.Column("unfamiliarity", sa.Float, nullable=True))
        batch.add_column(sa.Column("policy_score", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("policy_score")
        batch.drop_column("unfamiliarity")
        batch.drop_column("defer_reason")
