"""The ledger in shards: each shard a ledger of its own (store.Ledger: an RFC 6962 log with its
own writer lock and signed checkpoints) in a database of its own, tied together by signed roots
over the shards' latest checkpoints (roots.py), kept in the first shard's database.

A record goes to shard ``partition % shards`` of the topic partition it was read from. The
sink's replicas share the partitions, so each appends to its own shards without waiting for
another's lock, and the ledger's rate grows with its shards. Tandem keys every record by its
task, so all copies of an event reach the same partition, hence the same shard, for as long as
the topics keep their partition count: deduplication on (source, id) is per shard.

One shard is the ledger as it always was: no roots (its checkpoints are its roots), and every
call reads as ``Ledger``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, select
from sqlalchemy.ext.asyncio import AsyncEngine
from tandem_shared.envelope import utcnow
from tandem_shared.signing import to_utc

from tandem_audit_sink.checkpoint import Checkpoint, CheckpointError, Signer
from tandem_audit_sink.ledger import AuditRecord, StoredEntry
from tandem_audit_sink.roots import Root, ShardHead, heads_of, heads_text, shard_origin, sign_root
from tandem_audit_sink.store import (
    AmbiguousEvent,
    AppendResult,
    ConsistencyProof,
    InclusionProof,
    Ledger,
    LedgerError,
)
from tandem_audit_sink.tables import ledger_root
from tandem_audit_sink.verify import Failure, VerifyResult


@dataclass
class ShardedAppend:
    """What an append did in each shard it touched, and the root it signed, if any."""

    results: dict[int, AppendResult] = field(default_factory=dict)
    root: Root | None = None

    @property
    def appended(self) -> list[StoredEntry]:
        return [e for r in self.results.values() for e in r.appended]

    @property
    def duplicates(self) -> list[AuditRecord]:
        return [d for r in self.results.values() for d in r.duplicates]

    @property
    def conflicts(self) -> list[StoredEntry]:
        return [c for r in self.results.values() for c in r.conflicts]

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return [r.checkpoint for r in self.results.values() if r.checkpoint is not None]


@dataclass(frozen=True)
class ShardedProof:
    """An entry's inclusion path to its shard's checkpoint, and the root that names that
    checkpoint (None for a ledger of one shard, or a proof to a checkpoint asked for by size)."""

    proof: InclusionProof
    root: Root | None


class ShardedLedger:
    def __init__(self, shards: Sequence[Ledger], signer: Signer | None = None) -> None:
        """``signer`` signs the roots, under the ledger's origin; without it, roots are read."""
        if not shards:
            raise ValueError("a ledger needs at least one shard")
        self.shards = list(shards)
        self.signer = signer

    @classmethod
    def of(
        cls,
        engines: Sequence[AsyncEngine],
        signer: Signer | None,
        checkpoint_every: int = 1000,
        origin: str | None = None,
    ) -> ShardedLedger:
        """A ledger over one database per shard, the first holding the roots. Each shard's
        checkpoints are signed with the same key under its own origin (``shard_origin``)."""
        origin = origin or (signer.origin if signer else "tandem-audit")
        count = len(engines)
        shards = []
        for shard, engine in enumerate(engines):
            named = shard_origin(origin, shard, count)
            shards.append(
                Ledger(
                    engine,
                    signer.for_origin(named) if signer else None,
                    checkpoint_every,
                    shard=shard,
                    origin=named if count > 1 else None,
                )
            )
        return cls(shards, signer.for_origin(origin) if signer else None)

    @property
    def count(self) -> int:
        return len(self.shards)

    @property
    def sharded(self) -> bool:
        return len(self.shards) > 1

    def shard_of(self, record: AuditRecord) -> int:
        return record.partition % len(self.shards)

    def owner_of(self, checkpoint: Checkpoint) -> int | None:
        """The shard whose origin a checkpoint names (one shard: it, whatever it names)."""
        if not self.sharded:
            return 0
        return next((s.shard for s in self.shards if s.origin == checkpoint.origin), None)

    def shard(self, shard: int) -> Ledger:
        if not 0 <= shard < len(self.shards):
            raise LedgerError(f"no shard {shard}: the ledger has {len(self.shards)}")
        return self.shards[shard]

    async def append(self, records: Sequence[AuditRecord]) -> ShardedAppend:
        """Each shard's records in one transaction of its own, the shards side by side; a root
        over the shards when one of them signed a checkpoint."""
        by_shard: dict[int, list[AuditRecord]] = {}
        for record in records:
            by_shard.setdefault(self.shard_of(record), []).append(record)
        done = await asyncio.gather(*(self.shards[k].append(rs) for k, rs in by_shard.items()))
        result = ShardedAppend(dict(zip(by_shard, done, strict=True)))
        if result.checkpoints and self.sharded:
            result.root = await self.sign_root()
        return result

    async def checkpoint(self) -> tuple[list[Checkpoint], Root | None]:
        """Sign every shard that grew since its last checkpoint, and a root if one did."""
        made = [c for c in await asyncio.gather(*(s.checkpoint() for s in self.shards)) if c]
        root = await self.sign_root() if made and self.sharded else None
        return made, root

    async def sign_root(self) -> Root | None:
        """A root over the latest checkpoint of every shard that has one."""
        if self.signer is None:
            return None
        latest = await asyncio.gather(*(s.latest_checkpoint() for s in self.shards))
        heads = [ShardHead.of(k, c) for k, c in enumerate(latest) if c is not None]
        if not heads:
            return None
        root = sign_root(self.signer, heads, utcnow())
        async with self.shards[0].engine.begin() as conn:
            await conn.execute(ledger_root.insert(), [_root_row(root)])
        return root

    async def roots(self, after: datetime | None = None, limit: int | None = None) -> list[Root]:
        """Signed roots, oldest first (issued after ``after``)."""
        query = select(ledger_root).order_by(ledger_root.c.issued_at, ledger_root.c.digest)
        if after is not None:
            query = query.where(ledger_root.c.issued_at > after)
        async with self.shards[0].engine.connect() as conn:
            return [_root(row) for row in await conn.execute(query.limit(limit))]

    async def latest_root(self) -> Root | None:
        query = select(ledger_root).order_by(
            ledger_root.c.issued_at.desc(), ledger_root.c.digest.desc()
        )
        async with self.shards[0].engine.connect() as conn:
            row = (await conn.execute(query.limit(1))).one_or_none()
        return None if row is None else _root(row)

    async def sizes(self) -> list[int]:
        return list(await asyncio.gather(*(s.size() for s in self.shards)))

    async def size(self) -> int:
        return sum(await self.sizes())

    async def latest_checkpoint(self, shard: int = 0) -> Checkpoint | None:
        return await self.shard(shard).latest_checkpoint()

    async def checkpoints(
        self, after: int = 0, limit: int | None = None, shard: int = 0
    ) -> list[Checkpoint]:
        return await self.shard(shard).checkpoints(after, limit)

    async def task_events(self, task_id: str) -> list[StoredEntry]:
        return _merged(await self._each(lambda s: s.task_events(task_id)))

    async def entries_of(self, event_id: str, source: str | None = None) -> list[StoredEntry]:
        return _merged(await self._each(lambda s: s.entries_of(event_id, source)))

    async def conflicts(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[StoredEntry]:
        return _merged(await self._each(lambda s: s.conflicts(since, until)))

    async def stages(
        self,
        event_types: Collection[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[tuple[str, str, str]]:
        """As ``Ledger.stages``, over every shard (a task's records are in one shard, unless
        the partitions changed: then its stages are found in each)."""
        found = await self._each(lambda s: s.stages(event_types, since, until))
        return [row for rows in found for row in rows]

    async def chunks(
        self, query: Select[Any] | None = None, size: int = 1000
    ) -> AsyncIterator[list[StoredEntry]]:
        """Rows shard by shard, each in seq order, ``size`` at a time."""
        for shard in self.shards:
            async for page in shard.chunks(query, size):
                yield page

    async def prove_inclusion(
        self,
        event_id: str,
        tree_size: int | None = None,
        source: str | None = None,
        seq: int | None = None,
        shard: int | None = None,
    ) -> ShardedProof:
        """The entry's path to its shard's checkpoint: the one at ``tree_size`` if asked for,
        else the one the latest root names, with that root (one shard: its latest checkpoint).
        ``source``, ``seq`` and ``shard`` say which entry where the id names several."""
        entries = [
            e
            for e in await self.entries_of(event_id, source)
            if (seq is None or e.seq == seq) and (shard is None or e.shard == shard)
        ]
        if len(entries) > 1:
            raise AmbiguousEvent(event_id, entries)
        if not entries:
            raise LedgerError(f"no event {event_id!r}{_where(source, seq, shard)} in the ledger")
        [entry] = entries
        owner = self.shards[entry.shard]
        if not self.sharded or tree_size is not None:
            proof = await owner.prove_inclusion(event_id, tree_size, entry.source, entry.seq)
            return ShardedProof(proof, None)
        root = await self.latest_root()
        head = root.head(entry.shard) if root else None
        if root is None or head is None or head.tree_size < entry.seq:
            raise LedgerError(
                f"event {event_id!r} (shard {entry.shard}, seq {entry.seq}) is not yet covered "
                "by a signed root"
            )
        proof = await owner.prove_inclusion(event_id, head.tree_size, entry.source, entry.seq)
        if not head.names(proof.checkpoint):
            raise LedgerError(f"the latest root names no checkpoint of shard {entry.shard}")
        return ShardedProof(proof, root)

    async def prove_consistency(self, first: int, second: int, shard: int = 0) -> ConsistencyProof:
        return await self.shard(shard).prove_consistency(first, second)

    async def verify(
        self,
        chunk_size: int = 1000,
        trusted_keys: Collection[str] | None = None,
        since: Mapping[int, Checkpoint] | None = None,
        on_chunk: Callable[[int], None] | None = None,
        kept: Sequence[Checkpoint] = (),
    ) -> ShardedVerification:
        """Every shard (from a trusted checkpoint of it, where ``since`` has one; against the
        checkpoints ``kept`` elsewhere that name its origin), one after the other; then every
        root: its signature, and each head a checkpoint its shard holds. A shard's stored
        checkpoints were just checked against its entries, so a root whose heads they match
        vouches for entries that hash to it."""
        results: list[VerifyResult] = []
        for shard in self.shards:
            results.append(
                await shard.verify(
                    chunk_size,
                    trusted_keys,
                    since=(since or {}).get(shard.shard),
                    kept=[c for c in kept if self.owner_of(c) == shard.shard],
                    on_chunk=on_chunk,
                )
            )
        failed = next(
            ((k, r.failure) for k, r in enumerate(results) if r.failure is not None), None
        )
        roots = 0
        if failed is None and self.sharded:
            known = {
                k: {c.tree_size: c for c in await shard.checkpoints()}
                for k, shard in enumerate(self.shards)
            }
            for root in await self.roots():
                problem = _root_problem(root, known, trusted_keys)
                if problem is not None:
                    failed = (problem[0], Failure(problem[1], problem[2]))
                    break
                roots += 1
        return ShardedVerification(results, roots, failed)

    async def _each(self, read: Callable[[Ledger], Any]) -> list[Any]:
        return list(await asyncio.gather(*(read(s) for s in self.shards)))


@dataclass(frozen=True)
class ShardedVerification:
    """Each shard's result, the roots checked, and the first failure (shard, what failed)."""

    shards: list[VerifyResult]
    roots: int
    failed: tuple[int, Failure] | None

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def entries(self) -> int:
        return sum(r.entries for r in self.shards)

    @property
    def tree_size(self) -> int:
        """The entries of all shards together."""
        return sum(r.tree_size for r in self.shards)

    @property
    def checkpoints(self) -> int:
        return sum(r.checkpoints for r in self.shards)

    def combined(self) -> VerifyResult:
        """One result: a ledger of one shard's own; of several, the sums, no single root hash,
        and a failure that names its shard."""
        if len(self.shards) == 1:
            return self.shards[0]
        failure = None
        if self.failed is not None:
            shard, found = self.failed
            failure = Failure(found.seq, f"shard {shard}: {found.reason}")
        return VerifyResult(self.entries, self.tree_size, "", self.checkpoints, failure)


def _root_problem(
    root: Root, known: Mapping[int, Mapping[int, Checkpoint]], trusted: Collection[str] | None
) -> tuple[int, int, str] | None:
    """(shard, seq, why) when the root does not hold: a bad signature, or a head no stored
    checkpoint of its shard matches."""
    try:
        root.check(trusted)
    except CheckpointError as exc:
        return (0, 0, str(exc))
    for head in root.heads:
        stored = known.get(head.shard, {}).get(head.tree_size)
        if stored is None or not head.names(stored):
            return (
                head.shard,
                head.tree_size,
                f"root {root.digest[:12]} names a checkpoint of shard {head.shard} at size "
                f"{head.tree_size} that the shard does not hold",
            )
    return None


def _merged(per_shard: Sequence[Sequence[StoredEntry]]) -> list[StoredEntry]:
    """Entries of several shards in one order: when recorded, then shard and seq."""
    if len(per_shard) == 1:
        return list(per_shard[0])
    every = [e for entries in per_shard for e in entries]
    return sorted(every, key=lambda e: (to_utc(e.recorded_at), e.shard, e.seq))


def _where(source: str | None, seq: int | None, shard: int | None) -> str:
    said = [f"from source {source!r}"] if source is not None else []
    said += [f"in shard {shard}"] if shard is not None else []
    said += [f"at seq {seq}"] if seq is not None else []
    return "".join(f" {part}" for part in said)


def _root_row(root: Root) -> dict[str, Any]:
    return {
        "digest": root.digest,
        "issued_at": root.issued_at,
        "origin": root.origin,
        "heads": heads_text(root.heads),
        "public_key": root.public_key,
        "signature": root.signature,
    }


def _root(row: Row[Any]) -> Root:
    m = row._mapping
    return Root(
        origin=m["origin"],
        issued_at=to_utc(m["issued_at"]),
        heads=heads_of(m["heads"]),
        public_key=m["public_key"],
        signature=m["signature"],
    )
