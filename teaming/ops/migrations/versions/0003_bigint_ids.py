"""64-bit row ids on PostgreSQL (SQLite's INTEGER is 64-bit already): ids and the references to them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = {
    "decisions": ["id"],
    "review_tasks": ["id", "decision_id"],
    "reviews": ["id", "task_id", "decision_id"],
    "skips": ["id", "task_id"],
    "outcomes": ["id", "decision_id"],
    "events": ["id", "decision_id"],
}


def _retype(to: type) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=to())
        op.execute(f"ALTER SEQUENCE {table}_id_seq AS {'bigint' if to is sa.BigInteger else 'integer'}")


def upgrade() -> None:
    _retype(sa.BigInteger)


def downgrade() -> None:
    _retype(sa.Integer)
