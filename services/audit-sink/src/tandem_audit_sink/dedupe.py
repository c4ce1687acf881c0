"""Deduplication on (source, id): what the ledger holds under a batch's ids, and which of the
batch's records are new, duplicates (the same content again) or conflicts (other content).

CloudEvents makes (source, id) unique, and Tandem's ids are derived, so anyone can compute one:
the same id from another source is another event, and a record never replaces or hides one
recorded before it. A conflict is kept as evidence, marked with the seq of the first entry of
its (source, id).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, ColumnElement, Row, Select, any_, bindparam, case, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from tandem_audit_sink.ledger import AuditRecord, Content, document_content_hash, parse
from tandem_audit_sink.tables import FIRST_ENTRY, ledger

IN_CHUNK = 500  # values per IN (...) list, well under SQLite's bound-parameter limit

Key = tuple[str, str]  # (source, event id)


@dataclass
class Known:
    """A (source, id) in the ledger: the seq of its first entry, the contents recorded."""

    first: int
    hashes: set[str]


@dataclass
class Triage:
    # in batch order: each record to append, its content, and the seq it conflicts with
    wanted: list[tuple[AuditRecord, Content, int | None]] = field(default_factory=list)
    duplicates: list[AuditRecord] = field(default_factory=list)


def triage(
    records: Sequence[AuditRecord],
    contents: Sequence[Content],
    known: Mapping[Key, Known],
    next_seq: int,
) -> Triage:
    """Sort a batch against what the ledger holds (``known``) and against itself; the records
    to append get seqs from ``next_seq`` on, in order."""
    seen = {key: Known(k.first, set(k.hashes)) for key, k in known.items()}
    out = Triage()
    for record, content in zip(records, contents, strict=True):
        key = (record.source, record.event_id)
        before = seen.get(key)
        if before is None:
            seen[key] = Known(next_seq + len(out.wanted), {content.hash})
            out.wanted.append((record, content, None))
        elif content.hash in before.hashes:
            out.duplicates.append(record)
        else:
            before.hashes.add(content.hash)
            out.wanted.append((record, content, before.first))
    return out


async def known_under(conn: AsyncConnection, event_ids: Collection[str]) -> dict[Key, Known]:
    """Per (source, id) among these ids: the seq of its first entry and the content hashes of
    it and its conflicts. First entries are found by the unique index, their conflicts by
    theirs: both are partial indexes, which these queries match."""
    known: dict[Key, Known] = {}
    by_seq: dict[int, Known] = {}
    postgres = conn.dialect.name == "postgresql"
    ids = list(event_ids)
    for start in range(0, len(ids), IN_CHUNK):
        chunk = _among(ledger.c.event_id, ids[start : start + IN_CHUNK], postgres)
        for row in await conn.execute(_hashes().where(chunk, FIRST_ENTRY)):
            first = Known(int(row.seq), {_content_hash(row)})
            known[(row.source, row.event_id)] = by_seq[first.first] = first
    firsts = list(by_seq)
    for start in range(0, len(firsts), IN_CHUNK):
        seqs = _among(ledger.c.conflict_of, firsts[start : start + IN_CHUNK], postgres)
        for row in await conn.execute(_hashes().where(seqs)):
            by_seq[int(row.conflict_of)].hashes.add(_content_hash(row))
    return known


def _among(column: Column[Any], values: list[Any], postgres: bool) -> ColumnElement[bool]:
    """``column`` is one of ``values``. On PostgreSQL as ``= ANY`` of one array parameter: an
    IN list costs a bound parameter per value to render (about as much as the rest of an
    append's lookup) and is a new statement for every count of values."""
    if not postgres:
        return column.in_(values)
    return column == any_(bindparam(f"{column.name}_values", values, type_=ARRAY(column.type)))


def _hashes() -> Select[Any]:
    """(source, id), seq and content hash of entries; the entry itself only where its hash
    was not stored (entries from before it was)."""
    unhashed = case((ledger.c.content_hash.is_(None), ledger.c.canonical))
    return select(
        ledger.c.seq,
        ledger.c.source,
        ledger.c.event_id,
        ledger.c.conflict_of,
        ledger.c.content_hash,
        unhashed.label("unhashed"),
    )


def _content_hash(row: Row[Any]) -> str:
    if row.content_hash is not None:
        return str(row.content_hash)
    doc = parse(row.unhashed)
    return document_content_hash(doc if isinstance(doc, dict) else {})
