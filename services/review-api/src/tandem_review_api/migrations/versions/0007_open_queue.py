"""The queue's hot queries read open reviews only: claim-next walks the open ones in queue
order and stops at the first it may take; the claim count reads the holder's claims. Decided
reviews, the bulk of the table in time, are in neither index.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OPEN = sa.text("status <> 'decided'")
CLAIMED = sa.text("status = 'claimed'")


def upgrade() -> None:
    op.create_index(
        "ix_reviews_open",
        "reviews",
        [sa.text("priority DESC"), "due_at", "created_at", "review_id"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index(
        "ix_reviews_held",
        "reviews",
        ["claimed_by"],
        postgresql_where=CLAIMED,
        sqlite_where=CLAIMED,
    )
    # Its work is ix_reviews_open's now; one index fewer to write on every claim and decision.
    op.drop_index("ix_reviews_next", "reviews")


def downgrade() -> None:
    op.create_index("ix_reviews_next", "reviews", ["status", "priority", "due_at"])
    op.drop_index("ix_reviews_held", "reviews")
    op.drop_index("ix_reviews_open", "reviews")
