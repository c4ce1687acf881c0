"""When a person qualified for each named queue last asked it for work: a queue whose reviews
wait with nobody qualified about raises an alert.

Revision ID: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_activity",
        sa.Column("queue", sa.String(64), primary_key=True),
        sa.Column("active_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("queue_activity")
