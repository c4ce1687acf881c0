"""The Merkle ledger: block hashes and signed checkpoints replace the hash chain and its head;
a task type column for exports; on PostgreSQL a writer role that may only insert and read.

Revision ID: audit_0002
Revises: audit_0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op
from tandem_audit_sink.ledger import task_type_of
from tandem_audit_sink.merkle import Frontier

revision: str = "audit_0002"
down_revision: str | None = "audit_0001"
branch_labels: str | None = None
depends_on: str | None = None

REFUSAL = "ledger is append-only"
WRITER_ROLE = "tandem_audit_writer"
APPEND_ONLY = ("ledger", "ledger_block", "ledger_checkpoint")


def _sqlite_guards(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END",
    ]


def _postgres_guards(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()",
    ]


def _with_ledger_writable(sqlite: bool, work: Callable[[], None]) -> None:
    """Backfilling the new column is the one change the ledger ever takes: lift its guard for it."""
    if sqlite:
        op.execute("DROP TRIGGER ledger_no_update")
        work()
        op.execute(_sqlite_guards("ledger")[0])
    else:
        op.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_no_update")
        work()
        op.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_no_update")


def _backfill() -> None:
    bind = op.get_bind()
    ledger = sa.table(
        "ledger",
        sa.column("seq"),
        sa.column("canonical"),
        sa.column("leaf_hash"),
        sa.column("task_type"),
    )
    block = sa.table("ledger_block", sa.column("block"), sa.column("hash"))
    frontier = Frontier()
    rows = bind.execute(
        sa.select(ledger.c.seq, ledger.c.canonical, ledger.c.leaf_hash).order_by(ledger.c.seq)
    )
    blocks, task_types = [], []
    for row in rows:
        completed = frontier.push(bytes.fromhex(row.leaf_hash))
        if completed is not None:
            blocks.append({"block": completed[0], "hash": completed[1].hex()})
        found = task_type_of(json.loads(row.canonical).get("data"))
        if found is not None:
            task_types.append({"s": row.seq, "t": found})
    if blocks:
        bind.execute(block.insert(), blocks)
    if task_types:
        bind.execute(
            ledger.update()
            .where(ledger.c.seq == sa.bindparam("s"))
            .values(task_type=sa.bindparam("t")),
            task_types,
        )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute("ALTER TABLE ledger DROP COLUMN chain_hash")
    op.add_column("ledger", sa.Column("task_type", sa.Text, nullable=True))
    op.create_index("ix_ledger_recorded_at", "ledger", ["recorded_at"])
    op.create_table(
        "ledger_block",
        sa.Column("block", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "ledger_checkpoint",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )
    _with_ledger_writable(sqlite, _backfill)
    op.drop_table("ledger_head")
    for table in APPEND_ONLY[1:]:
        for statement in _sqlite_guards(table) if sqlite else _postgres_guards(table):
            op.execute(statement)
    if not sqlite:
        _writer_role()


def _writer_role() -> None:
    """The role the service runs as: it reads and appends, nothing else (grant it to a login)."""
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{WRITER_ROLE}') "
        f"THEN CREATE ROLE {WRITER_ROLE} NOLOGIN; END IF; END $$"
    )
    tables = ", ".join(APPEND_ONLY)
    op.execute(f"REVOKE ALL ON {tables} FROM PUBLIC")
    op.execute(f"GRANT SELECT, INSERT ON {tables} TO {WRITER_ROLE}")
    op.execute(f"GRANT SELECT ON alembic_version_audit TO {WRITER_ROLE}")


def downgrade() -> None:
    raise NotImplementedError("the Merkle ledger cannot be turned back into a hash chain")
