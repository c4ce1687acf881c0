"""The ledger tables (the migrations create them; this is what the code and autogenerate see)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

ledger = Table(
    "ledger",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("canonical", Text, nullable=False),
    Column("leaf_hash", String(64), nullable=False),
    Column("task_type", Text, nullable=True),
    UniqueConstraint("event_id", name="uq_ledger_event_id"),
    Index("ix_ledger_subject_seq", "subject", "seq"),
    Index("ix_ledger_recorded_at", "recorded_at"),
)

# The hash of every whole block of 256 leaves (block n holds seq 256n+1 to 256n+256), so a
# proof or a restart needs the block hashes and at most two blocks' leaves.
ledger_block = Table(
    "ledger_block",
    metadata,
    Column("block", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
)

# Signed tree heads: tree size, root and time, signed with the ledger's Ed25519 key.
ledger_checkpoint = Table(
    "ledger_checkpoint",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", String(64), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("origin", Text, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("signature", Text, nullable=False),
)
