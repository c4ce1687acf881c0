"""Retention: move a shard's oldest whole blocks out of the database into an archive file that
still proves them (archive.py), then delete them, recording the archive in the same transaction.

The entries are verified before they are written, the file is checked as an auditor would
before anything is deleted, and the database's guard lets only archived entries go. Block
hashes and checkpoints stay: the tree, its proofs of what remains, and its roots are unchanged.
Run as the ledger's owner (the service's writer login may not delete).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from tandem_shared.envelope import utcnow
from tandem_shared.signing import to_utc

from tandem_audit_sink.archive import ArchiveError, ArchiveHeader, archive_bound, check_archive
from tandem_audit_sink.archive import file_name as archive_file_name
from tandem_audit_sink.merkle import Frontier, consistency_proof
from tandem_audit_sink.store import Ledger
from tandem_audit_sink.tables import ledger, ledger_archive, ledger_checkpoint
from tandem_audit_sink.verify import Verifier


@dataclass(frozen=True)
class Archived:
    path: Path
    first_seq: int
    last_seq: int
    checkpoint_size: int


async def archive_before(ledger_: Ledger, before: datetime, directory: Path) -> Archived | None:
    """Archive the shard's entries recorded before ``before`` (whole blocks, signed by a
    checkpoint; the newest entry stays) to a file in ``directory``, then delete them from the
    database. None when no whole block is due."""
    start = await ledger_.archived()
    archived = start.upto if start else 0
    async with ledger_.engine.connect() as conn:
        size = int(await conn.scalar(select(func.coalesce(func.max(ledger.c.seq), 0))) or 0)
        signed = int(
            await conn.scalar(select(func.coalesce(func.max(ledger_checkpoint.c.tree_size), 0)))
            or 0
        )
        first_young = await conn.scalar(
            select(func.min(ledger.c.seq)).where(ledger.c.recorded_at >= to_utc(before))
        )
    upto = archive_bound(size, signed, first_young, archived)
    if upto <= archived:
        return None
    checkpoint = (await ledger_.checkpoints(after=upto - 1, limit=1))[0]
    view = await ledger_.tree_view(checkpoint.tree_size, [upto, checkpoint.tree_size])
    begin = Frontier.at(archived, view.subtree)
    path = directory / archive_file_name(ledger_.shard, archived + 1, upto)
    end = await _write(ledger_, path, begin, upto)
    header = ArchiveHeader(
        origin=checkpoint.origin,
        shard=ledger_.shard,
        first_seq=archived + 1,
        last_seq=upto,
        start=tuple(node.hex() for node in begin.nodes),
        root_hash=end.root().hex(),
        checkpoint=checkpoint,
        consistency=tuple(
            node.hex() for node in consistency_proof(upto, checkpoint.tree_size, view.subtree)
        ),
    )
    digest = await asyncio.to_thread(_finish, path, header)
    async with ledger_.engine.begin() as conn:
        # The record first: the guard lets entries go only within an archived prefix.
        await conn.execute(
            ledger_archive.insert().values(
                upto=upto,
                root_hash=header.root_hash,
                checkpoint_size=checkpoint.tree_size,
                file=path.name,
                file_sha256=digest,
                archived_at=utcnow(),
            )
        )
        await conn.execute(ledger.delete().where(ledger.c.seq <= upto))
    return Archived(path, archived + 1, upto, checkpoint.tree_size)


async def _write(ledger_: Ledger, path: Path, begin: Frontier, upto: int) -> Frontier:
    """Verify the entries after ``begin`` up to ``upto`` against the stored blocks and
    checkpoints while writing them, each as hashed, to ``path``'s body; their tree's edge."""
    checkpoints = await ledger_.checkpoints(after=begin.size)
    verifier = Verifier(
        [c for c in checkpoints if c.tree_size <= upto],
        await ledger_.blocks(),
        start=begin,
        origin=ledger_.origin,
    )
    body = path.with_suffix(".body")
    with body.open("w", encoding="utf-8") as sink:
        async for rows in ledger_.chunks(after=begin.size, upto=upto):
            if not await asyncio.to_thread(verifier.feed, rows):
                break
            sink.write("".join(f"{row.canonical}\n" for row in rows))
    result = verifier.finish()
    if result.failure is not None:
        body.unlink()
        raise ArchiveError(
            f"not archived: the ledger fails verification at seq {result.failure.seq}: "
            f"{result.failure.reason}"
        )
    if result.tree_size != upto:
        body.unlink()
        raise ArchiveError(f"not archived: entries end at seq {result.tree_size}, not {upto}")
    return verifier.frontier


def _finish(path: Path, header: ArchiveHeader) -> str:
    """Put the header before the body, check the whole file as an auditor would, and move it
    into place durably; its SHA-256."""
    body = path.with_suffix(".body")
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out, body.open(encoding="utf-8") as entries:
        out.write(json.dumps(header.document(), sort_keys=True) + "\n")
        for line in entries:
            out.write(line)
        out.flush()
        os.fsync(out.fileno())
    body.unlink()
    with partial.open(encoding="utf-8") as written:
        check_archive(written)
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        for chunk in iter(lambda: raw.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
