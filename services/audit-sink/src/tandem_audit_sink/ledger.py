"""Ledger entries, pure: the canonical form of an event and its place, and its RFC 6962 leaf hash.

Each entry is hashed as ``leaf = SHA-256(0x00 || canonical UTF-8)``; the leaves form the Merkle
tree of ``merkle``, whose signed roots (``checkpoint``) commit to every entry before them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from tandem_shared.signing import canonical_bytes, rfc3339, to_utc

from tandem_audit_sink.merkle import leaf_hash

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
    # only in the entry of a conflict: the seq of the first entry with its (source, id)
    "conflict_of": "conflict_of",
}


def canonical_json(value: Any) -> str:
    return canonical_bytes(value).decode("utf-8")


def content_hash(event_type: str, subject: str, canonical_data: bytes) -> str:
    """SHA-256 (hex) of what two records under one (source, id) must share to be the same
    event: the canonical JSON of its type, subject and data.

    Left out: where the record was read and its key (a replay or a producer's retry may land
    elsewhere), its headers (trace context differs per send) and its ``time``:
    ``Event.derived`` stamps the time of sending unless the producer passes one, so an honest
    re-send of the same work (an HTTP client retrying a submission, a producer redoing a
    batch) can carry another time. What an event says, including when a decision was taken
    (``decided_at``), is in its data, and that is compared.
    """
    document = {"data": orjson.Fragment(canonical_data), "subject": subject, "type": event_type}
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


def document_content_hash(doc: Mapping[str, Any]) -> str:
    """``content_hash`` of a stored entry (its canonical document parsed)."""
    return content_hash(
        str(doc.get("type")), str(doc.get("subject")), canonical_bytes(doc.get("data"))
    )


def parse(raw: bytes | str) -> Any:
    """Strict JSON (RFC 8259: no NaN, no infinities); raises ValueError."""
    return orjson.loads(raw)


def entry_leaf(canonical: str) -> bytes:
    return leaf_hash(canonical.encode("utf-8"))


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
class Content:
    """A record's data in canonical JSON (serialised once, for its entry and its hash) and the
    hash it is deduplicated by."""

    data: bytes
    hash: str


def content_of(record: AuditRecord) -> Content:
    data = canonical_bytes(record.data)
    return Content(data, content_hash(record.event_type, record.subject, data))


@dataclass(frozen=True)
class StoredEntry:
    """A ledger row: the searchable columns, the canonical entry and its leaf hash (hex)."""

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
    task_type: str | None = None
    conflict_of: int | None = None
    content_hash: str | None = None  # None on entries from before it was stored
    shard: int = 0  # where the entry is kept (not hashed: a shard's checkpoints name it)

    def columns(self) -> dict[str, Any]:
        derived = {"task_type": self.task_type, "content_hash": self.content_hash}
        return {name: getattr(self, name) for name in COLUMN_KEYS} | derived


def entry_document(
    record: AuditRecord,
    seq: int,
    recorded_at: str,
    content: Content | None = None,
    conflict_of: int | None = None,
) -> dict[str, Any]:
    """``recorded_at`` as ``rfc3339`` spells it (once for a whole append, see Sealer)."""
    data = record.data if content is None else orjson.Fragment(content.data)
    document = {
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
        "data": data,
        "recorded_at": recorded_at,
    }
    if conflict_of is not None:  # absent otherwise: entries keep the form they always had
        document["conflict_of"] = conflict_of
    return document


def task_type_of(data: Any) -> str | None:
    """The task type an event's data names, directly or in its task (what exports filter by)."""
    if not isinstance(data, dict):
        return None
    found = data.get("task_type")
    if found is None and isinstance(data.get("task"), dict):
        found = data["task"].get("task_type")
    return found if isinstance(found, str) and len(found) <= 256 else None


def seal(
    record: AuditRecord,
    seq: int,
    recorded_at: datetime,
    content: Content | None = None,
    conflict_of: int | None = None,
    shard: int = 0,
) -> StoredEntry:
    """Give a record its place ``seq`` in the ledger (of ``shard``); ``conflict_of`` marks it
    as a second, different content under the (source, id) of that earlier entry."""
    return Sealer(recorded_at, shard).seal(record, seq, content, conflict_of)


class Sealer:
    """Seals the records of one append: its time is converted and spelled once, not per entry."""

    def __init__(self, recorded_at: datetime, shard: int = 0) -> None:
        self.recorded_at = to_utc(recorded_at)
        self.spelled = rfc3339(recorded_at)
        self.shard = shard

    def seal(
        self,
        record: AuditRecord,
        seq: int,
        content: Content | None = None,
        conflict_of: int | None = None,
    ) -> StoredEntry:
        content = content or content_of(record)
        raw = canonical_bytes(entry_document(record, seq, self.spelled, content, conflict_of))
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
            recorded_at=self.recorded_at,
            canonical=raw.decode("utf-8"),
            leaf_hash=leaf_hash(raw).hex(),
            task_type=task_type_of(record.data),
            conflict_of=conflict_of,
            content_hash=content.hash,
            shard=self.shard,
        )


def entry_problem(row: StoredEntry) -> str | None:
    """Why the row's columns disagree with the hashed entry, if they do. The text itself needs
    no check of form: the leaf hash is over the text as stored."""
    try:
        doc = parse(row.canonical)
    except ValueError:
        return "the stored entry is not JSON"
    if not isinstance(doc, dict):
        return "the stored entry is not a JSON object"
    differing = []
    for column, key in COLUMN_KEYS.items():
        value = getattr(row, column)
        rendered = rfc3339(value) if isinstance(value, datetime) else value
        if doc.get(key) != rendered:
            differing.append(column)
    if row.task_type != task_type_of(doc.get("data")):
        differing.append("task_type")
    if row.content_hash is not None and row.content_hash != document_content_hash(doc):
        differing.append("content_hash")
    if differing:
        return f"column {', '.join(differing)} differs from the hashed entry"
    if row.conflict_of is not None and not 0 < row.conflict_of < row.seq:
        return f"it is marked a conflict with seq {row.conflict_of}, not an earlier entry"
    return None


def document_of(row: StoredEntry) -> dict[str, Any]:
    """The entry a row carries (what the lineage query shows)."""
    doc = parse(row.canonical)
    return doc if isinstance(doc, dict) else {}
