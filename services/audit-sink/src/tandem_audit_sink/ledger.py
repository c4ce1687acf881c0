"""The hash-chained ledger, pure: canonical entries, RFC 6962 leaf hashes, the chain, verification.

Each entry is hashed as ``leaf = SHA-256(0x00 || canonical)`` and chained as
``chain = SHA-256(0x01 || previous chain || leaf)`` from a genesis of 32 zero bytes, so changing,
removing or reordering any row breaks every chain hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = bytes(32)
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
UNPARSED_TYPE = "tandem.unparsed"

# Ledger columns and the key each one has in the canonical entry.
COLUMN_KEYS: dict[str, str] = {
    "seq": "seq",
    "event_id": "id",
    "event_type": "type",
    "source": "source",
    "subject": "subject",
    "event_time": "time",
    "topic": "topic",
    "partition": "partition",
    "offset": "offset",
    "recorded_at": "recorded_at",
}


def to_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive time is taken to be UTC already."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def rfc3339(value: datetime) -> str:
    """UTC with microseconds and a Z: one spelling per instant."""
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text as is, no NaN; raises ValueError when impossible."""
    text = json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_default,
    )
    text.encode("utf-8")  # lone surrogates cannot be hashed as UTF-8: refuse them here
    return text


def leaf_hash(canonical: str) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + canonical.encode("utf-8")).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + previous + leaf).digest()


@dataclass(frozen=True)
class AuditRecord:
    """One consumed Kafka record as the ledger keeps it, before it has a place in the chain."""

    event_id: str
    event_type: str
    source: str
    subject: str
    event_time: datetime
    topic: str
    partition: int
    offset: int
    key: str | None
    data: Any
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Head:
    seq: int
    chain_hash: str


GENESIS_HEAD = Head(0, GENESIS.hex())


@dataclass(frozen=True)
class StoredEntry:
    """A ledger row: the searchable columns, the canonical entry and its two hashes (hex)."""

    seq: int
    event_id: str
    event_type: str
    source: str
    subject: str
    event_time: datetime
    topic: str
    partition: int
    offset: int
    recorded_at: datetime
    canonical: str
    leaf_hash: str
    chain_hash: str

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMN_KEYS}


def entry_document(record: AuditRecord, seq: int, recorded_at: datetime) -> dict[str, Any]:
    return {
        "seq": seq,
        "id": record.event_id,
        "type": record.event_type,
        "source": record.source,
        "subject": record.subject,
        "time": rfc3339(record.event_time),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key,
        "headers": dict(record.headers),
        "data": record.data,
        "recorded_at": rfc3339(recorded_at),
    }


def seal(record: AuditRecord, seq: int, recorded_at: datetime, previous: Head) -> StoredEntry:
    """Give a record its place after ``previous``."""
    canonical = canonical_json(entry_document(record, seq, recorded_at))
    leaf = leaf_hash(canonical)
    chained = chain_hash(bytes.fromhex(previous.chain_hash), leaf)
    return StoredEntry(
        seq=seq,
        event_id=record.event_id,
        event_type=record.event_type,
        source=record.source,
        subject=record.subject,
        event_time=to_utc(record.event_time),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        recorded_at=to_utc(recorded_at),
        canonical=canonical,
        leaf_hash=leaf.hex(),
        chain_hash=chained.hex(),
    )


@dataclass(frozen=True)
class Failure:
    seq: int
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    entries: int
    head: Head
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class Verifier:
    """Recomputes the chain incrementally, so a large ledger can be streamed through in chunks."""

    def __init__(self) -> None:
        self.entries = 0
        self.seq = 0
        self.chain = GENESIS
        self.failure: Failure | None = None

    def feed(self, rows: Iterable[StoredEntry]) -> bool:
        """Check the next rows; False once a row failed (later rows are not looked at)."""
        for row in rows:
            if self.failure is not None:
                break
            self.failure = self._check(row)
            if self.failure is None:
                self.entries += 1
                self.seq = row.seq
                self.chain = bytes.fromhex(row.chain_hash)
        return self.failure is None

    def _check(self, row: StoredEntry) -> Failure | None:
        expected = self.seq + 1
        if row.seq != expected:
            return Failure(expected, f"gap in seq: expected {expected}, found {row.seq}")
        problem = _entry_problem(row)
        if problem:
            return Failure(row.seq, f"entry mismatch: {problem}")
        leaf = leaf_hash(row.canonical)
        if leaf.hex() != row.leaf_hash:
            return Failure(row.seq, "leaf mismatch: the stored leaf hash is not the entry's hash")
        if chain_hash(self.chain, leaf).hex() != row.chain_hash:
            return Failure(
                row.seq, "chain mismatch: the stored chain hash does not follow the previous row"
            )
        return None

    def finish(self, head: Head | None = None) -> VerifyResult:
        """The result; with the ledger's recorded head, a cut-off tail is caught too."""
        reached = Head(self.seq, self.chain.hex())
        if self.failure is None and head is not None:
            if self.seq < head.seq:
                self.failure = Failure(
                    self.seq + 1,
                    f"ledger truncated: it ends at seq {self.seq} but its head is at {head.seq}",
                )
            elif self.seq == head.seq and reached.chain_hash != head.chain_hash:
                self.failure = Failure(
                    self.seq, "head mismatch: the recorded head hash differs from the chain"
                )
        return VerifyResult(self.entries, reached, self.failure)


def verify(entries: Iterable[StoredEntry], head: Head | None = None) -> VerifyResult:
    verifier = Verifier()
    verifier.feed(entries)
    return verifier.finish(head)


def _entry_problem(row: StoredEntry) -> str | None:
    """Why the row's columns or canonical text disagree with the hashed entry, if they do."""
    try:
        doc = json.loads(row.canonical)
    except ValueError:
        return "the stored entry is not JSON"
    if not isinstance(doc, dict):
        return "the stored entry is not a JSON object"
    try:
        if canonical_json(doc) != row.canonical:
            return "the stored entry is not in canonical form"
    except ValueError:
        return "the stored entry cannot be canonicalised"
    differing = []
    for column, key in COLUMN_KEYS.items():
        value = getattr(row, column)
        rendered = rfc3339(value) if isinstance(value, datetime) else value
        if doc.get(key) != rendered:
            differing.append(column)
    if differing:
        return f"column {', '.join(differing)} differs from the hashed entry"
    return None


def document_of(row: StoredEntry) -> dict[str, Any]:
    """The entry a row carries (what the lineage query shows)."""
    doc = json.loads(row.canonical)
    return doc if isinstance(doc, dict) else {}
