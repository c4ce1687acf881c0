"""The ledger in SQL: batched appends under one writer lock, checkpoints, proofs, chunked reads.

Each append runs in one transaction: take the writer lock (an advisory lock on PostgreSQL, the
write lock of BEGIN IMMEDIATE on SQLite), find the tree's size, seal the new entries, store the
blocks they complete and, when due, a signed checkpoint. The tree's right edge is kept between
appends and rebuilt from the stored blocks whenever another writer got in between.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import Row, Select, func, select
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tandem_shared.db import upgrade
from tandem_shared.envelope import utcnow
from tandem_shared.signing import to_utc

from tandem_audit_sink.checkpoint import Checkpoint, Signer
from tandem_audit_sink.dedupe import Key, Known, known_under, triage
from tandem_audit_sink.ledger import AuditRecord, Content, Sealer, StoredEntry, content_of
from tandem_audit_sink.merkle import (
    BLOCK,
    Frontier,
    ProofError,
    TreeView,
    blocks_for,
    consistency_proof,
    inclusion_proof,
)
from tandem_audit_sink.tables import (
    CONFLICT,
    ledger,
    ledger_archive,
    ledger_block,
    ledger_checkpoint,
)
from tandem_audit_sink.tables import FIRST_ENTRY as FIRST
from tandem_audit_sink.verify import Failure, Verifier, VerifyResult

MIGRATIONS = Path(__file__).parent / "migrations"
_PIPELINE_SLICE = 100  # entries sealed while the slice before them is inserted
_WRITER_LOCK = 0x7A6E_0AD1  # PostgreSQL advisory lock key held by the appending transaction
_LEDGER_COLUMNS = [column.name for column in ledger.columns]
_ledger_row = operator.attrgetter(*_LEDGER_COLUMNS)  # a sealed entry as a row to COPY
_TREE_SIZE = select(func.coalesce(func.max(ledger.c.seq), 0)).scalar_subquery()
_CHECKPOINT_SIZE = select(
    func.coalesce(func.max(ledger_checkpoint.c.tree_size), 0)
).scalar_subquery()


class LedgerError(RuntimeError):
    """A request the ledger cannot answer: an unknown event, a size no checkpoint covers."""


class AmbiguousEvent(LedgerError):
    """An event id that names several entries (from two sources, or a conflict): a proof is
    of one entry, and proving the wrong one would mislead, so the caller must choose."""

    def __init__(self, event_id: str, entries: Sequence[StoredEntry]) -> None:
        choices = ", ".join(
            f"seq {e.seq} from source {e.source!r}"
            + (f" (a conflict with seq {e.conflict_of})" if e.conflict_of else "")
            for e in entries
        )
        super().__init__(
            f"event {event_id!r} names {len(entries)} entries: {choices}; "
            "say which by its source, or its seq"
        )
        self.entries = list(entries)


async def migrate(url: str) -> None:
    await upgrade(url, MIGRATIONS)


@dataclass
class AppendResult:
    appended: list[StoredEntry] = field(default_factory=list)  # conflicts included
    duplicates: list[AuditRecord] = field(default_factory=list)
    tree_size: int = 0
    checkpoint: Checkpoint | None = None

    @property
    def conflicts(self) -> list[StoredEntry]:
        return [entry for entry in self.appended if entry.conflict_of is not None]


@dataclass(frozen=True)
class InclusionProof:
    entry: StoredEntry
    path: list[str]
    checkpoint: Checkpoint


@dataclass(frozen=True)
class ConsistencyProof:
    first: Checkpoint
    second: Checkpoint
    path: list[str]


class ArchivedPrefix(NamedTuple):
    """The first ``upto`` entries, archived to files and gone from the database."""

    upto: int
    root_hash: str


class Ledger:
    def __init__(
        self,
        engine: AsyncEngine,
        signer: Signer | None = None,
        checkpoint_every: int = 1000,
        shard: int = 0,
        origin: str | None = None,
    ) -> None:
        """Appends sign a checkpoint once ``checkpoint_every`` entries came since the last one
        (the service adds one on a timer too); without a signer the ledger is for reading.
        ``shard``: which shard of a sharded ledger this is (its entries say so); ``origin``:
        the origin its checkpoints must name, checked by ``verify`` when given."""
        self.engine = engine
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.shard = shard
        self.origin = origin
        self._postgres = engine.dialect.name == "postgresql"
        self._frontier = Frontier()  # as of the last commit this process made or saw

    async def append(self, records: Sequence[AuditRecord]) -> AppendResult:
        """Append the records not yet present, in order, in one transaction. A record whose
        (source, id) is known with the same content is a duplicate; with other content it is a
        conflict, appended too and marked with the seq of the first entry of its (source, id)."""
        result = AppendResult()
        async with self.engine.begin() as conn:
            # The lock and the lookups are round trips: the records are hashed meanwhile, a
            # slice at a time, each pause letting the next query go out.
            found = asyncio.create_task(self._lookup(conn, {r.event_id for r in records}))
            contents: list[Content] = []
            try:
                for start in range(0, len(records), _PIPELINE_SLICE):
                    await asyncio.sleep(0)
                    contents += map(content_of, records[start : start + _PIPELINE_SLICE])
            finally:
                (frontier, last), known = await found  # never left running on the connection
            batch = triage(records, contents, known, frontier.size + 1)
            result.duplicates = batch.duplicates
            sealer = Sealer(utcnow(), self.shard)
            blocks = []
            # Seal a slice while the database inserts the one before: hashing and inserting
            # take about as long as each other, and run on two cores this way.
            inserting: asyncio.Task[Any] | None = None
            try:
                wanted = batch.wanted
                for start in range(0, len(wanted), _PIPELINE_SLICE):
                    sealed = []
                    for record, content, conflict_of in wanted[start : start + _PIPELINE_SLICE]:
                        entry = sealer.seal(record, frontier.size + 1, content, conflict_of)
                        sealed.append(entry)
                        completed = frontier.push(bytes.fromhex(entry.leaf_hash))
                        if completed is not None:
                            blocks.append({"block": completed[0], "hash": completed[1].hex()})
                    if inserting is not None:
                        await inserting
                    inserting = asyncio.create_task(self._insert(conn, sealed))
                    await asyncio.sleep(0)  # let it send the rows before the next slice
                    result.appended += sealed
            finally:
                # never leave an insert running on the connection the transaction ends on
                if inserting is not None:
                    await inserting
            if blocks:
                await conn.execute(ledger_block.insert(), blocks)
            if frontier.size - last >= self.checkpoint_every:
                result.checkpoint = await self._sign(conn, frontier)
        self._frontier = frontier
        result.tree_size = frontier.size
        return result

    async def _insert(self, conn: AsyncConnection, entries: Sequence[StoredEntry]) -> None:
        """Store sealed entries. On PostgreSQL with COPY, in the append's transaction: an
        INSERT of many rows costs the server a plan and a tuple per row, and the rows'
        parameters a round of encoding each, several times what COPY takes."""
        if not self._postgres:
            await conn.execute(ledger.insert(), [e.columns() | _hashed(e) for e in entries])
            return
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # asyncpg's, on this dialect
        try:
            await driver.copy_records_to_table(
                ledger.name, records=map(_ledger_row, entries), columns=_LEDGER_COLUMNS
            )
        except asyncpg.InterfaceError as exc:
            # The driver's own "connection is closed", unwrapped here (SQLAlchemy wraps what
            # goes through it): an outage, which the consumer waits out, not a bad batch.
            raise DisconnectionError(f"the ledger's connection was lost: {exc}") from exc

    async def _lookup(
        self, conn: AsyncConnection, event_ids: Collection[str]
    ) -> tuple[tuple[Frontier, int], dict[Key, Known]]:
        """Under the writer lock: the tree and its last checkpoint, and what the ledger holds
        under the batch's ids."""
        locked = await self._locked_frontier(conn)
        return locked, await known_under(conn, event_ids)

    async def checkpoint(self) -> Checkpoint | None:
        """Sign the tree as it is, unless nothing was added since the last checkpoint."""
        async with self.engine.begin() as conn:
            frontier, last = await self._locked_frontier(conn)
            made = None
            if frontier.size > last:
                made = await self._sign(conn, frontier)
        self._frontier = frontier
        return made

    async def _sign(self, conn: AsyncConnection, frontier: Frontier) -> Checkpoint | None:
        if self.signer is None:
            return None
        made = self.signer.sign(frontier.size, frontier.root().hex(), utcnow())
        await conn.execute(ledger_checkpoint.insert(), [asdict(made)])
        return made

    async def _locked_frontier(self, conn: AsyncConnection) -> tuple[Frontier, int]:
        """Take the writer lock; the tree's right edge as stored now (a copy to work on), and
        the size of its last checkpoint (both read in one round trip)."""
        if self._postgres:
            await conn.execute(select(func.pg_advisory_xact_lock(_WRITER_LOCK)))
        sizes = (await conn.execute(select(_TREE_SIZE, _CHECKPOINT_SIZE))).one()
        size, last = int(sizes[0]), int(sizes[1])
        if size != self._frontier.size:
            view = await self._view(conn, size, [size])
            self._frontier = Frontier.at(size, view.subtree)
        return self._frontier.copy(), last

    @staticmethod
    async def _view(conn: AsyncConnection, size: int, edges: Sequence[int]) -> TreeView:
        """The block hashes of a tree of ``size`` leaves and the leaves of the edge blocks."""
        rows = await conn.execute(
            select(ledger_block.c.hash)
            .where(ledger_block.c.block < size // BLOCK)
            .order_by(ledger_block.c.block)
        )
        blocks = [bytes.fromhex(h) for h in rows.scalars()]
        if len(blocks) != size // BLOCK:
            raise LedgerError(f"{size // BLOCK - len(blocks)} block hash(es) missing")
        leaves: dict[int, bytes] = {}
        for block in blocks_for(*edges):
            first = block * BLOCK + 1
            rows = await conn.execute(
                select(ledger.c.seq, ledger.c.leaf_hash).where(
                    ledger.c.seq >= first, ledger.c.seq < first + BLOCK, ledger.c.seq <= size
                )
            )
            leaves.update({int(seq) - 1: bytes.fromhex(h) for seq, h in rows})
        return TreeView(size, blocks, leaves)

    async def tree_view(self, size: int, edges: Sequence[int]) -> TreeView:
        async with self.engine.connect() as conn:
            return await self._view(conn, size, edges)

    async def size(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.coalesce(func.max(ledger.c.seq), 0))) or 0)

    async def checkpoints(self, after: int = 0, limit: int | None = None) -> list[Checkpoint]:
        query = (
            select(ledger_checkpoint)
            .where(ledger_checkpoint.c.tree_size > after)
            .order_by(ledger_checkpoint.c.tree_size)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [_checkpoint(row) for row in await conn.execute(query)]

    async def latest_checkpoint(self) -> Checkpoint | None:
        query = select(ledger_checkpoint).order_by(ledger_checkpoint.c.tree_size.desc()).limit(1)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _checkpoint(row)

    async def checkpoint_at(self, tree_size: int) -> Checkpoint:
        query = select(ledger_checkpoint).where(ledger_checkpoint.c.tree_size == tree_size)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise LedgerError(f"no checkpoint at tree size {tree_size}")
        return _checkpoint(row)

    async def entries_of(self, event_id: str, source: str | None = None) -> list[StoredEntry]:
        """The entries recorded under an event id (of one source, if given), in ledger order:
        one per source, plus any conflicts."""
        firsts = select(ledger).where(ledger.c.event_id == event_id, FIRST)
        if source is not None:
            firsts = firsts.where(ledger.c.source == source)
        async with self.engine.connect() as conn:
            found = [_entry(r, self.shard) for r in await conn.execute(firsts)]
            if found:
                conflicts = select(ledger).where(ledger.c.conflict_of.in_([e.seq for e in found]))
                found += [_entry(r, self.shard) for r in await conn.execute(conflicts)]
        return sorted(found, key=lambda e: e.seq)

    async def prove_inclusion(
        self,
        event_id: str,
        tree_size: int | None = None,
        source: str | None = None,
        seq: int | None = None,
    ) -> InclusionProof:
        """The entry of ``event_id`` and its path to the checkpoint at ``tree_size`` (the latest
        by default). Where the id names more than one entry (two sources, or a conflict),
        ``source`` and ``seq`` say which; without them the ledger refuses to guess."""
        entries = await self.entries_of(event_id, source)
        if seq is not None:
            entries = [e for e in entries if e.seq == seq]
        if not entries:
            raise LedgerError(f"no event {event_id!r}{_of(source, seq)} in the ledger")
        if len(entries) > 1:
            raise AmbiguousEvent(event_id, entries)
        [entry] = entries
        checkpoint = await (
            self.checkpoint_at(tree_size) if tree_size else self.latest_checkpoint()
        )
        if checkpoint is None or checkpoint.tree_size < entry.seq:
            raise LedgerError(
                f"event {event_id!r} (seq {entry.seq}) is not yet covered by a checkpoint"
            )
        async with self.engine.connect() as conn:
            view = await self._view(
                conn, checkpoint.tree_size, [entry.seq - 1, checkpoint.tree_size]
            )
        path = inclusion_proof(entry.seq - 1, checkpoint.tree_size, view.subtree)
        return InclusionProof(entry, [p.hex() for p in path], checkpoint)

    async def conflicts(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[StoredEntry]:
        """The conflicts recorded (in [since, until)), oldest first: each names the first entry
        of its (source, id) in ``conflict_of``."""
        query = _recorded(select(ledger).where(CONFLICT), since, until)
        async with self.engine.connect() as conn:
            return [_entry(r, self.shard) for r in await conn.execute(query.order_by(ledger.c.seq))]

    async def prove_consistency(self, first: int, second: int) -> ConsistencyProof:
        """The path from the checkpoint at ``first`` leaves to the one at ``second``."""
        if first > second:
            raise LedgerError("the first checkpoint must not be larger than the second")
        older, newer = await self.checkpoint_at(first), await self.checkpoint_at(second)
        async with self.engine.connect() as conn:
            view = await self._view(conn, second, [first, second])
        try:
            path = consistency_proof(first, second, view.subtree)
        except ProofError as exc:
            raise LedgerError(str(exc)) from exc
        return ConsistencyProof(older, newer, [p.hex() for p in path])

    async def task_events(self, task_id: str) -> list[StoredEntry]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(ledger).where(ledger.c.subject == task_id).order_by(ledger.c.seq)
            )
            return [_entry(r, self.shard) for r in rows]

    async def stages(
        self,
        event_types: Collection[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[str, str, str]]:
        """(subject, event type, canonical entry) of the given types, oldest first, of the
        subjects with one of them recorded in [since, until): all of theirs, those recorded
        outside it too, so a task that straddles an edge of the window is seen whole."""
        of_types = ledger.c.event_type.in_(list(event_types))
        query = select(ledger.c.subject, ledger.c.event_type, ledger.c.canonical).where(of_types)
        if since is not None or until is not None:
            active = _recorded(select(ledger.c.subject).where(of_types), since, until)
            query = query.where(ledger.c.subject.in_(active))
        async with self.engine.connect() as conn:
            rows = await conn.execute(query.order_by(ledger.c.seq))
            return [(str(s), str(t), str(c)) for s, t, c in rows]

    async def chunks(
        self,
        query: Select[Any] | None = None,
        size: int = 1000,
        after: int = 0,
        upto: int | None = None,
    ) -> AsyncIterator[list[StoredEntry]]:
        """Rows in seq order, ``size`` at a time (keyset paging), optionally filtered."""
        base = query if query is not None else select(ledger)
        while True:
            page = base.where(ledger.c.seq > after)
            if upto is not None:
                page = page.where(ledger.c.seq <= upto)
            async with self.engine.connect() as conn:
                rows = await conn.execute(page.order_by(ledger.c.seq).limit(size))
                batch = [_entry(r, self.shard) for r in rows]
            if not batch:
                return
            yield batch
            after = batch[-1].seq

    async def archived(self) -> ArchivedPrefix | None:
        """The prefix of the tree archived out of the database, if any (its size and root)."""
        query = (
            select(ledger_archive.c.upto, ledger_archive.c.root_hash)
            .order_by(ledger_archive.c.upto.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else ArchivedPrefix(int(row[0]), str(row[1]))

    async def blocks(self) -> dict[int, bytes]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(ledger_block.c.block, ledger_block.c.hash))
            return {int(b): bytes.fromhex(h) for b, h in rows}

    async def verify(
        self,
        chunk_size: int = 1000,
        trusted_keys: Collection[str] | None = None,
        since: Checkpoint | None = None,
        kept: Sequence[Checkpoint] = (),
        on_chunk: Callable[[int], None] | None = None,
    ) -> VerifyResult:
        """Recompute the ledger, from the start (or the end of its archived prefix) or from a
        trusted checkpoint ``since``, against the stored checkpoints and any ``kept`` elsewhere
        (a cut tail shows against those). Hashing runs off the event loop."""
        archived = await self.archived()
        if since is not None and archived is not None and since.tree_size < archived.upto:
            # What the trusted checkpoint covers was archived since (its files prove it):
            # verify what the database holds, from the archived prefix on.
            since = None
        trusted = (since.tree_size, since.root_hash) if since is not None else archived
        start = None
        if trusted is not None:
            size, root_hash = trusted
            async with self.engine.connect() as conn:
                start = Frontier.at(size, (await self._view(conn, size, [size])).subtree)
            if start.root().hex() != root_hash:
                what = "trusted checkpoint" if since is not None else "archived prefix's root"
                failure = Failure(1, f"the stored tree does not match the {what}")
                return VerifyResult(0, size, start.root().hex(), 0, failure)
        stored = await self.checkpoints(after=start.size if start else 0)
        verifier = Verifier(
            [*stored, *kept], await self.blocks(), trusted_keys, start, origin=self.origin
        )
        if verifier.failure is None:
            async for rows in self.chunks(size=chunk_size, after=start.size if start else 0):
                fine = await asyncio.to_thread(verifier.feed, rows)
                if on_chunk is not None:
                    on_chunk(len(rows))
                if not fine:
                    break
        return verifier.finish()


def _recorded(query: Select[Any], since: datetime | None, until: datetime | None) -> Select[Any]:
    if since is not None:
        query = query.where(ledger.c.recorded_at >= since)
    if until is not None:
        query = query.where(ledger.c.recorded_at < until)
    return query


def _hashed(entry: StoredEntry) -> dict[str, Any]:
    return {"canonical": entry.canonical, "leaf_hash": entry.leaf_hash}


def _of(source: str | None, seq: int | None) -> str:
    said = ([f"from source {source!r}"] if source is not None else []) + (
        [f"at seq {seq}"] if seq is not None else []
    )
    return "".join(f" {part}" for part in said)


def _checkpoint(row: Row[Any]) -> Checkpoint:
    m = row._mapping
    return Checkpoint(
        origin=m["origin"],
        tree_size=int(m["tree_size"]),
        root_hash=m["root_hash"],
        issued_at=to_utc(m["issued_at"]),
        public_key=m["public_key"],
        signature=m["signature"],
    )


def _entry(row: Row[Any], shard: int) -> StoredEntry:
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
        task_type=m["task_type"],
        conflict_of=None if m["conflict_of"] is None else int(m["conflict_of"]),
        content_hash=m["content_hash"],
        shard=shard,
    )
