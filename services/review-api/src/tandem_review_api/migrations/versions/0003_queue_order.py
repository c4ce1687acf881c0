"""The queue is served by priority, then due time; an escalation keeps its reason.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("escalation_reason", sa.Text, nullable=True))
        batch.create_index("ix_reviews_next", ["status", "priority", "due_at"])


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_index("ix_reviews_next")
        batch.drop_column("escalation_reason")
