"""Ledger archives, pure: where the next one ends, its header, and checking one with nothing but
the file and the ledger's public key.

An archive holds a run of whole blocks of one shard's entries, each line exactly as hashed. Its
header carries what proves them without the database: the right edge of the tree before its
first entry (the previous archive's end), the root of the tree at its last entry, a signed
checkpoint at or beyond that, and the consistency proof from one to the other. So every entry
of the file is shown to be in the tree a signed checkpoint names, and each archive to continue
the one before.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from tandem_audit_sink.checkpoint import Checkpoint, CheckpointError
from tandem_audit_sink.ledger import entry_leaf
from tandem_audit_sink.merkle import BLOCK, Frontier, ProofError, verify_consistency

FORMAT = "tandem-ledger-archive/1"


class ArchiveError(ValueError):
    """An archive that does not prove what it holds: the message says where and why."""


def archive_bound(size: int, signed: int, first_young: int | None, archived: int) -> int:
    """Where the next archive ends: the last whole block whose entries were all recorded
    before the cutoff (``first_young``: the first entry recorded after it, if any) and are
    covered by a signed checkpoint (of ``signed`` entries). The newest entry always stays, so
    the database still knows the tree's size. ``archived`` if nothing more may go."""
    last = min(signed, size - 1, size if first_young is None else first_young - 1)
    return max(archived, last // BLOCK * BLOCK)


def file_name(shard: int, first_seq: int, last_seq: int) -> str:
    return f"ledger-shard{shard}-{first_seq:012d}-{last_seq:012d}.jsonl"


@dataclass(frozen=True)
class ArchiveHeader:
    origin: str
    shard: int
    first_seq: int
    last_seq: int
    start: tuple[str, ...]  # the tree's right edge before first_seq, as Frontier.nodes (hex)
    root_hash: str  # the root of the tree of last_seq entries
    checkpoint: Checkpoint  # signed, at or beyond last_seq
    consistency: tuple[str, ...]  # from last_seq to the checkpoint's size

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "origin": self.origin,
            "shard": self.shard,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "start": list(self.start),
            "root_hash": self.root_hash,
            "checkpoint": self.checkpoint.document(),
            "consistency": list(self.consistency),
        }

    @classmethod
    def of(cls, line: str) -> ArchiveHeader:
        try:
            doc = json.loads(line)
            if doc.get("format") != FORMAT:
                raise ArchiveError(f"not a {FORMAT} file (format {doc.get('format')!r})")
            return cls(
                origin=str(doc["origin"]),
                shard=int(doc["shard"]),
                first_seq=int(doc["first_seq"]),
                last_seq=int(doc["last_seq"]),
                start=tuple(str(node) for node in doc["start"]),
                root_hash=str(doc["root_hash"]),
                checkpoint=Checkpoint.of(doc["checkpoint"]),
                consistency=tuple(str(node) for node in doc["consistency"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError, CheckpointError) as exc:
            if isinstance(exc, ArchiveError):
                raise
            raise ArchiveError(f"the header is not an archive's: {exc}") from exc

    def start_frontier(self) -> Frontier:
        return Frontier(self.first_seq - 1, [bytes.fromhex(node) for node in self.start])


@dataclass(frozen=True)
class CheckedArchive:
    header: ArchiveHeader
    end: Frontier  # the tree's right edge after the last entry: where the next archive starts


def check_archive(
    lines: Iterable[str],
    trusted_keys: Collection[str] | None = None,
    previous: Frontier | None = None,
) -> CheckedArchive:
    """Hash every entry onto the header's starting edge (which must be ``previous``'s end,
    when given), and check that the tree they make is the one the signed checkpoint extends."""
    rows = iter(lines)
    header = ArchiveHeader.of(next(rows, ""))
    try:
        frontier = header.start_frontier()
    except ValueError as exc:
        raise ArchiveError(f"the header's starting edge is not hex: {exc}") from exc
    if previous is not None and (previous.size, previous.nodes) != (
        frontier.size,
        frontier.nodes,
    ):
        raise ArchiveError(
            f"it does not continue the archive before it: it starts after seq "
            f"{frontier.size}, with another tree than the one that archive ends with"
        )
    for line in rows:
        text = line.rstrip("\n")
        expected = frontier.size + 1
        try:
            seq = json.loads(text).get("seq")
        except (AttributeError, ValueError) as exc:
            raise ArchiveError(f"the entry after seq {expected - 1} is not JSON: {exc}") from exc
        if seq != expected:
            raise ArchiveError(f"entry {seq!r} where seq {expected} was due")
        frontier.push(entry_leaf(text))
    if frontier.size != header.last_seq:
        raise ArchiveError(f"it ends at seq {frontier.size}, its header says {header.last_seq}")
    root = frontier.root()
    if root.hex() != header.root_hash:
        raise ArchiveError(
            f"entries {header.first_seq} to {header.last_seq} do not hash to the header's root"
        )
    checkpoint = header.checkpoint
    try:
        checkpoint.check(trusted_keys)
        verify_consistency(
            header.last_seq,
            checkpoint.tree_size,
            root,
            bytes.fromhex(checkpoint.root_hash),
            [bytes.fromhex(node) for node in header.consistency],
        )
    except (CheckpointError, ProofError, ValueError) as exc:
        raise ArchiveError(f"the signed checkpoint does not vouch for it: {exc}") from exc
    if checkpoint.origin != header.origin:
        raise ArchiveError(f"its checkpoint is of {checkpoint.origin!r}, not {header.origin!r}")
    return CheckedArchive(header, frontier)
