"""Reviews record when they last changed, for the live stream of queue changes.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_reviews_updated", ["updated_at"])
    op.execute("UPDATE reviews SET updated_at = COALESCE(decided_at, created_at)")


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_index("ix_reviews_updated")
        batch.drop_column("updated_at")
