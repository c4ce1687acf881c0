"""Deduplicate on (source, id), not on the id alone, and keep conflicts: a content hash column,
a column that marks a conflict with the seq of the first entry of its (source, id), and a
unique index on (id, source) over first entries only.

No entry is changed: old entries keep a NULL content hash (computed from their entry when a
record with their id comes again). PostgreSQL drops the old constraint in place; SQLite cannot
drop a table's UNIQUE constraint, so it copies the table into the new shape within the
migration's transaction and puts back its append-only triggers.

Revision ID: audit_0003
Revises: audit_0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "audit_0003"
down_revision: str | None = "audit_0002"
branch_labels: str | None = None
depends_on: str | None = None

REFUSAL = "ledger is append-only"
_SQLITE_GUARDS = [
    f"CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END",
    f"CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END",
]
_FIRST_ENTRY = sa.text("conflict_of IS NULL")
_CONFLICT = sa.text("conflict_of IS NOT NULL")


def _new_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("conflict_of", sa.BigInteger, nullable=True),
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Batch mode copies every row as it is into a table of the new shape; dropping the old
        # table drops its triggers too, so they are made again at once.
        with op.batch_alter_table("ledger", recreate="always") as batch:
            batch.drop_constraint("uq_ledger_event_id", type_="unique")
            for column in _new_columns():
                batch.add_column(column)
        for statement in _SQLITE_GUARDS:
            op.execute(statement)
    else:
        op.drop_constraint("uq_ledger_event_id", "ledger", type_="unique")
        for column in _new_columns():
            op.add_column("ledger", column)
    op.create_index(
        "uq_ledger_event_id_source",
        "ledger",
        ["event_id", "source"],
        unique=True,
        sqlite_where=_FIRST_ENTRY,
        postgresql_where=_FIRST_ENTRY,
    )
    op.create_index(
        "ix_ledger_conflict_of",
        "ledger",
        ["conflict_of"],
        sqlite_where=_CONFLICT,
        postgresql_where=_CONFLICT,
    )


def downgrade() -> None:
    raise NotImplementedError(
        "a ledger that may hold one id from two sources cannot be made unique on the id again"
    )
