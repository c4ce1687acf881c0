"""Recomputing the ledger, pure: every entry, every leaf, every stored block, every checkpoint.

Rows are fed in seq order, in chunks, so a ledger of any size streams through. An entry whose
columns, text or leaf disagree is named at once; an entry rewritten together with its leaf hash
is caught by the first signed checkpoint after it (and by its stored block, if that was left);
a cut tail by a checkpoint beyond the end.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tandem_audit_sink.checkpoint import Checkpoint, CheckpointError
from tandem_audit_sink.ledger import StoredEntry, entry_leaf, entry_problem
from tandem_audit_sink.merkle import BLOCK, Frontier


@dataclass(frozen=True)
class Failure:
    seq: int
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    entries: int
    tree_size: int
    root_hash: str
    checkpoints: int
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class Verifier:
    """Feeds rows after ``start`` (a trusted tree, empty by default) through the Merkle tree."""

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint] = (),
        blocks: Mapping[int, bytes] | None = None,
        trusted_keys: Collection[str] | None = None,
        start: Frontier | None = None,
        origin: str | None = None,
    ) -> None:
        """``origin``: the origin every checkpoint must name (a shard's), when given."""
        self.frontier = start.copy() if start else Frontier()
        self.blocks = blocks or {}
        self.entries = 0
        self.checked = 0
        self.failure: Failure | None = None
        self._verified_size = self.frontier.size  # the last size a signed root vouched for
        self._pending = sorted(
            (c for c in checkpoints if c.tree_size > self.frontier.size),
            key=lambda c: c.tree_size,
        )
        for checkpoint in self._pending:
            try:
                checkpoint.check(trusted_keys)
            except CheckpointError as exc:
                self.failure = Failure(checkpoint.tree_size, str(exc))
                break
            if origin is not None and checkpoint.origin != origin:
                self.failure = Failure(
                    checkpoint.tree_size,
                    f"checkpoint at size {checkpoint.tree_size} is of {checkpoint.origin!r}, "
                    f"not of {origin!r}",
                )
                break

    def feed(self, rows: Iterable[StoredEntry]) -> bool:
        """Check the next rows; False once something failed (later rows are not looked at)."""
        if self.failure is not None:
            return False
        for row in rows:
            self.failure = self._check(row)
            if self.failure is not None:
                return False
            self.entries += 1
            self._reach_checkpoints()
            if self.failure is not None:
                return False
        return True

    def _check(self, row: StoredEntry) -> Failure | None:
        expected = self.frontier.size + 1
        if row.seq != expected:
            return Failure(expected, f"gap in seq: expected {expected}, found {row.seq}")
        # The text against its hash first, then the columns (the content hash among them)
        # against the text: each failure then names what was changed.
        leaf = entry_leaf(row.canonical)
        if leaf.hex() != row.leaf_hash:
            return Failure(row.seq, "leaf mismatch: the stored leaf hash is not the entry's hash")
        problem = entry_problem(row)
        if problem:
            return Failure(row.seq, f"entry mismatch: {problem}")
        completed = self.frontier.push(leaf)
        if completed is not None:
            index, hashed = completed
            stored = self.blocks.get(index)
            if stored is not None and stored != hashed:
                first = index * BLOCK + 1
                return Failure(
                    max(first, self._verified_size + 1),
                    f"block mismatch: entries {first} to {first + BLOCK - 1} do not hash to "
                    f"their stored block hash",
                )
        return None

    def _reach_checkpoints(self) -> None:
        while self._pending and self._pending[0].tree_size == self.frontier.size:
            checkpoint = self._pending.pop(0)
            if self.frontier.root().hex() != checkpoint.root_hash:
                self.failure = Failure(
                    self._verified_size + 1,
                    f"root mismatch: entries {self._verified_size + 1} to {checkpoint.tree_size} "
                    f"do not hash to the root signed at size {checkpoint.tree_size}",
                )
                return
            self.checked += 1
            self._verified_size = checkpoint.tree_size

    def finish(self) -> VerifyResult:
        """The result; a checkpoint beyond the last row means the ledger lost its tail."""
        if self.failure is None and self._pending:
            beyond = self._pending[-1].tree_size
            self.failure = Failure(
                self.frontier.size + 1,
                f"ledger truncated: it ends at seq {self.frontier.size} but a checkpoint "
                f"was signed at size {beyond}",
            )
        return VerifyResult(
            entries=self.entries,
            tree_size=self.frontier.size,
            root_hash=self.frontier.root().hex(),
            checkpoints=self.checked,
            failure=self.failure,
        )


def verify(
    rows: Iterable[StoredEntry],
    checkpoints: Sequence[Checkpoint] = (),
    trusted_keys: Collection[str] | None = None,
) -> VerifyResult:
    verifier = Verifier(checkpoints, trusted_keys=trusted_keys)
    verifier.feed(rows)
    return verifier.finish()
