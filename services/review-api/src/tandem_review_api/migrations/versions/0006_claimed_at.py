"""Reviews record when their claim began: heartbeats extend a claim up to a longest hold.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    # A claim held during the upgrade begins at its next heartbeat (the service sets it).


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("claimed_at")
