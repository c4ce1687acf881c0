"""Ledger entries, pure: the canonical form of an event and its place, and its RFC 6962 leaf hash.

Each entry is hashed as ``leaf = SHA-256(0x00 || canonical UTF-8)``; the leaves form the Merkle
tree of ``merkle``, whose signed roots (``checkpoint``) commit to every entry before them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

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
}


def to_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive time is taken to be UTC already."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def rfc3339(value: datetime) -> str:
    """UTC with microseconds and a Z: one spelling per instant."""
    return to_utc(value).isoformat(timespec="microseconds")[:-6] + "Z"


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def canonical_bytes(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 as is, times as ``rfc3339``; raises ValueError for what
    has no single spelling (lone surrogates, integers beyond 64 bits). Values come from strict
    JSON (``parse``), which has no NaN or infinity to spell."""
    try:
        return orjson.dumps(value, default=_default, option=_CANONICAL)
    except orjson.JSONEncodeError as exc:
        raise ValueError(str(exc)) from exc


def canonical_json(value: Any) -> str:
    return canonical_bytes(value).decode("utf-8")


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

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMN_KEYS} | {"task_type": self.task_type}


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


def task_type_of(data: Any) -> str | None:
    """The task type an event's data names, directly or in its task (what exports filter by)."""
    if not isinstance(data, dict):
        return None
    found = data.get("task_type")
    if found is None and isinstance(data.get("task"), dict):
        found = data["task"].get("task_type")
    return found if isinstance(found, str) and len(found) <= 256 else None


def seal(record: AuditRecord, seq: int, recorded_at: datetime) -> StoredEntry:
    """Give a record its place ``seq`` in the ledger."""
    raw = canonical_bytes(entry_document(record, seq, recorded_at))
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
        canonical=raw.decode("utf-8"),
        leaf_hash=leaf_hash(raw).hex(),
        task_type=task_type_of(record.data),
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
    if differing:
        return f"column {', '.join(differing)} differs from the hashed entry"
    return None


def document_of(row: StoredEntry) -> dict[str, Any]:
    """The entry a row carries (what the lineage query shows)."""
    doc = parse(row.canonical)
    return doc if isinstance(doc, dict) else {}
