"""First looks: each reviewer's verdict on a blind review before the model's view is shown.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "first_looks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("review_id", sa.String(36), sa.ForeignKey("reviews.review_id"), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("review_id", "reviewer", name="uq_first_looks_reviewer"),
    )


def downgrade() -> None:
    op.drop_table("first_looks")
