"""Time on task: a claim counts the time its holder worked (claim and heartbeats), and each
approval keeps when its claim began and that active time.

Revision ID: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("active_seconds", sa.Float, nullable=True))
        batch.add_column(sa.Column("active_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("active_seconds", sa.Float, nullable=True))
    # Claims held during the upgrade count from their next heartbeat; approvals before it
    # were not measured (null), and the report falls back to the assumed time for them.


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("active_seconds")
        batch.drop_column("claimed_at")
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("active_at")
        batch.drop_column("active_seconds")
