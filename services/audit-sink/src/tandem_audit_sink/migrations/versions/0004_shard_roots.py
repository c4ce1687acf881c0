"""Signed roots over the ledger's shards: the latest checkpoint of every shard, signed as one.

Kept in the first shard's database (the others get the table too, empty: every shard has the
same schema). Append-only like the other ledger tables, and on PostgreSQL the writer role may
only read and insert it.

Revision ID: audit_0004
Revises: audit_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "audit_0004"
down_revision: str | None = "audit_0003"
branch_labels: str | None = None
depends_on: str | None = None

REFUSAL = "ledger is append-only"
WRITER_ROLE = "tandem_audit_writer"
TABLE = "ledger_root"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        TABLE,
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("heads", sa.Text, nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )
    op.create_index("ix_ledger_root_issued_at", TABLE, ["issued_at"])
    if sqlite:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {TABLE}_no_{event.lower()} BEFORE {event} ON {TABLE} "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            )
        return
    op.execute(
        f"CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE OR DELETE ON {TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.execute(
        f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.execute(f"REVOKE ALL ON {TABLE} FROM PUBLIC")
    op.execute(f"GRANT SELECT, INSERT ON {TABLE} TO {WRITER_ROLE}")


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only: its roots are not dropped")
