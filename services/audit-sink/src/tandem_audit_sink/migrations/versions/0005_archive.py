"""Retention: the ledger's oldest whole blocks may leave the database once archived.

``ledger_archive`` records each archive (append-only like the other ledger tables): the prefix
of the tree it took (``upto`` entries, a whole number of blocks), that prefix's root, the signed
checkpoint its consistency proof reaches, and the file's name and SHA-256. The ledger's DELETE
guard now refuses only entries beyond the archived prefix: nothing unarchived can leave, and
UPDATE and TRUNCATE stay refused. The writer role may read the table, not write it: archiving
is the owner's work (``tandem audit archive``).

Revision ID: audit_0005
Revises: audit_0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "audit_0005"
down_revision: str | None = "audit_0004"
branch_labels: str | None = None
depends_on: str | None = None

REFUSAL = "ledger is append-only"
WRITER_ROLE = "tandem_audit_writer"
TABLE = "ledger_archive"
_ARCHIVED = f"(SELECT coalesce(max(upto), 0) FROM {TABLE})"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        TABLE,
        sa.Column("upto", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger, nullable=False),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
    )
    if sqlite:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {TABLE}_no_{event.lower()} BEFORE {event} ON {TABLE} "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            )
        op.execute("DROP TRIGGER ledger_no_delete")
        op.execute(
            f"CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger WHEN OLD.seq > {_ARCHIVED} "
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
    op.execute(f"GRANT SELECT ON {TABLE} TO {WRITER_ROLE}")
    op.execute("DROP TRIGGER ledger_no_update ON ledger")
    op.execute(
        "CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.execute(
        "CREATE FUNCTION ledger_refuse_unarchived_delete() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF OLD.seq > {_ARCHIVED} THEN RAISE EXCEPTION '{REFUSAL}' "
        "USING ERRCODE = 'insufficient_privilege'; END IF; RETURN OLD; END $$"
    )
    op.execute(
        "CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_unarchived_delete()"
    )


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only: its archives are not dropped")
