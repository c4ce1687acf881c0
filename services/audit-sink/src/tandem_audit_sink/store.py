"""The ledger in SQL: batched appends under the head lock, lineage queries, chunked reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tandem_shared.db import upgrade
from tandem_shared.envelope import utcnow

from tandem_audit_sink.ledger import (
    AuditRecord,
    Failure,
    Head,
    StoredEntry,
    Verifier,
    VerifyResult,
    seal,
    to_utc,
)
from tandem_audit_sink.tables import ledger, ledger_head

MIGRATIONS = Path(__file__).parent / "migrations"
_IN_CHUNK = 500  # ids per IN (...) list, well under SQLite's bound-parameter limit
_MAX_SEQ = 2**63 - 1


class LedgerError(RuntimeError):
    """The ledger's database is not in the shape the migrations leave it in."""


async def migrate(url: str) -> None:
    await upgrade(url, MIGRATIONS)


@dataclass
class AppendResult:
    appended: list[StoredEntry] = field(default_factory=list)
    duplicates: list[AuditRecord] = field(default_factory=list)
    head: Head | None = None


class Ledger:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    async def append(self, records: Sequence[AuditRecord]) -> AppendResult:
        """Append the records not yet present, in order, in one transaction."""
        result = AppendResult()
        fresh: dict[str, AuditRecord] = {}
        for record in records:
            if record.event_id in fresh:
                result.duplicates.append(record)
            else:
                fresh[record.event_id] = record
        async with self.engine.begin() as conn:
            head = await self._lock_head(conn)
            present = await self._present(conn, list(fresh))
            recorded_at = utcnow()
            for record in fresh.values():
                if record.event_id in present:
                    result.duplicates.append(record)
                    continue
                entry = seal(record, head.seq + 1, recorded_at, head)
                result.appended.append(entry)
                head = Head(entry.seq, entry.chain_hash)
            if result.appended:
                await conn.execute(ledger.insert(), [_values(e) for e in result.appended])
                await conn.execute(
                    update(ledger_head)
                    .where(ledger_head.c.id == 1)
                    .values(seq=head.seq, chain_hash=head.chain_hash)
                )
        result.head = head
        return result

    async def _lock_head(self, conn: AsyncConnection) -> Head:
        if self._sqlite:
            # Writing first takes SQLite's write lock now (waiting for the busy timeout) rather
            # than failing to upgrade a read lock later; PostgreSQL uses FOR UPDATE below.
            await conn.execute(
                update(ledger_head).where(ledger_head.c.id == 1).values(seq=ledger_head.c.seq)
            )
        row = (
            await conn.execute(
                select(ledger_head.c.seq, ledger_head.c.chain_hash)
                .where(ledger_head.c.id == 1)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise LedgerError("the ledger head row is missing; run the migrations")
        return Head(int(row.seq), str(row.chain_hash))

    @staticmethod
    async def _present(conn: AsyncConnection, event_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(event_ids), _IN_CHUNK):
            chunk = event_ids[start : start + _IN_CHUNK]
            rows = await conn.execute(select(ledger.c.event_id).where(ledger.c.event_id.in_(chunk)))
            found.update(rows.scalars())
        return found

    async def head(self) -> Head | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(ledger_head.c.seq, ledger_head.c.chain_hash).where(ledger_head.c.id == 1)
                )
            ).one_or_none()
        return None if row is None else Head(int(row.seq), str(row.chain_hash))

    async def task_events(self, task_id: str) -> list[StoredEntry]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(ledger).where(ledger.c.subject == task_id).order_by(ledger.c.seq)
            )
            return [_entry(r) for r in rows]

    async def chunks(self, upto: int, size: int) -> AsyncIterator[list[StoredEntry]]:
        """Rows with seq <= upto in seq order, ``size`` at a time (keyset paging)."""
        after = 0
        while after < upto:
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    select(ledger)
                    .where(ledger.c.seq > after, ledger.c.seq <= upto)
                    .order_by(ledger.c.seq)
                    .limit(size)
                )
                batch = [_entry(r) for r in rows]
            if not batch:
                return
            yield batch
            after = batch[-1].seq

    async def verify(
        self,
        chunk_size: int = 1000,
        head: Head | None = None,
        on_chunk: Callable[[int], None] | None = None,
    ) -> VerifyResult:
        """Stream the ledger up to its head through a Verifier; hashing runs off the event loop."""
        head = head or await self.head()
        verifier = Verifier()
        async for rows in self.chunks(head.seq if head else _MAX_SEQ, chunk_size):
            fine = await asyncio.to_thread(verifier.feed, rows)
            if on_chunk is not None:
                on_chunk(len(rows))
            if not fine:
                break
        result = verifier.finish(head)
        if head is None and result.ok:
            missing = Failure(result.head.seq, "the ledger head row is missing")
            return VerifyResult(result.entries, result.head, missing)
        return result


def _values(entry: StoredEntry) -> dict[str, Any]:
    return {
        **entry.columns(),
        "canonical": entry.canonical,
        "leaf_hash": entry.leaf_hash,
        "chain_hash": entry.chain_hash,
    }


def _entry(row: Row[Any]) -> StoredEntry:
    m = row._mapping  # SQLite returns timestamps without their zone: they were written in UTC
    return StoredEntry(
        seq=int(m["seq"]),
        event_id=m["event_id"],
        event_type=m["event_type"],
        source=m["source"],
        subject=m["subject"],
        event_time=to_utc(m["event_time"]),
        topic=m["topic"],
        partition=int(m["partition"]),
        offset=int(m["offset"]),
        recorded_at=to_utc(m["recorded_at"]),
        canonical=m["canonical"],
        leaf_hash=m["leaf_hash"],
        chain_hash=m["chain_hash"],
    )
