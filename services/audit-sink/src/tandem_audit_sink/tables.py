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
    # SHA-256 of the entry's type, subject and data (ledger.content_hash); NULL on entries
    # from before it was kept, whose hash comes from their entry when needed.
    Column("content_hash", String(64), nullable=True),
    # Set on a conflict: a record whose (source, id) was recorded before with other content.
    # It is appended like any entry (it is evidence) and names the seq of the first one.
    Column("conflict_of", BigInteger, nullable=True),
    Index("ix_ledger_subject_seq", "subject", "seq"),
    Index("ix_ledger_recorded_at", "recorded_at"),
)

# The dedupe key: one first entry per (source, id); conflicts are the further entries of a
# (source, id) and point at it. The id leads, so lookups by event id alone use it too.
FIRST_ENTRY = ledger.c.conflict_of.is_(None)
Index(
    "uq_ledger_event_id_source",
    ledger.c.event_id,
    ledger.c.source,
    unique=True,
    sqlite_where=FIRST_ENTRY,
    postgresql_where=FIRST_ENTRY,
)
# Conflicts are rare: this index holds them alone, and finds them from their first entry.
CONFLICT = ledger.c.conflict_of.is_not(None)
Index(
    "ix_ledger_conflict_of",
    ledger.c.conflict_of,
    sqlite_where=CONFLICT,
    postgresql_where=CONFLICT,
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

# Signed roots over the shards (roots.py): in the first shard's database, named by the digest
# of what they sign. A ledger of one shard has none: its checkpoints are its roots.
ledger_root = Table(
    "ledger_root",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("origin", Text, nullable=False),
    Column("heads", Text, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("signature", Text, nullable=False),
    Index("ix_ledger_root_issued_at", "issued_at"),
)

# Archives (retention): each names the prefix of the tree it took out of the database (a whole
# number of blocks), that prefix's root and the file that holds it. The DELETE guard lets only
# entries within the largest prefix go.
ledger_archive = Table(
    "ledger_archive",
    metadata,
    Column("upto", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", String(64), nullable=False),
    Column("checkpoint_size", BigInteger, nullable=False),
    Column("file", Text, nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("archived_at", DateTime(timezone=True), nullable=False),
)
