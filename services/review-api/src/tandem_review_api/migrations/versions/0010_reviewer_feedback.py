"""Reviewer feedback: an approval may rate the explanation and the model (1-5) and carry a
note; flags on cases reach the owners.

Revision ID: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("explanation_useful", sa.Integer, nullable=True))
        batch.add_column(sa.Column("trust", sa.Integer, nullable=True))
        batch.add_column(sa.Column("note", sa.Text, nullable=True))
    op.create_table(
        "flags",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("review_id", sa.String(36), sa.ForeignKey("reviews.review_id"), nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("task_type", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("review_id", "reviewer", "kind", name="uq_flags_reviewer_kind"),
    )
    op.create_index("ix_flags_created", "flags", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_flags_created", "flags")
    op.drop_table("flags")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("note")
        batch.drop_column("trust")
        batch.drop_column("explanation_useful")
