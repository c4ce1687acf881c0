"""The RFC 6962 / RFC 9162 Merkle tree, pure: hashes, the growing right edge, proofs, checks.

``leaf = SHA-256(0x00 || entry)`` and ``node = SHA-256(0x01 || left || right)``; the tree over n
leaves splits at the largest power of two below n. The ledger keeps every leaf hash and the hash
of every whole block of ``BLOCK`` leaves, so any subtree, and so any proof, needs at most two
blocks' leaves and the block hashes, never a pass over the whole ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
BLOCK_LEVEL = 8
BLOCK = 1 << BLOCK_LEVEL
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof that does not hold, or a request for one that cannot exist."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): where RFC 6962 splits n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


@dataclass
class Frontier:
    """The right edge of the tree: one hash per whole subtree that the size's bits name, largest
    first. Appending folds it like a binary counter; the root folds it from the right."""

    size: int = 0
    nodes: list[bytes] = field(default_factory=list)

    def push(self, leaf: bytes) -> tuple[int, bytes] | None:
        """Append a leaf hash; when it completes a block, return (block index, block hash)."""
        completed = None
        hashed, carry, level = leaf, self.size, 0
        while carry & 1:
            hashed = node_hash(self.nodes.pop(), hashed)
            carry >>= 1
            level += 1
            if level == BLOCK_LEVEL:
                completed = ((self.size + 1) >> BLOCK_LEVEL) - 1, hashed
        self.nodes.append(hashed)
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        hashed = self.nodes[-1]
        for node in reversed(self.nodes[:-1]):
            hashed = node_hash(node, hashed)
        return hashed

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self.nodes))

    @classmethod
    def at(cls, size: int, subtree: Subtree) -> Frontier:
        """The right edge of a tree of ``size`` leaves, from its whole subtrees."""
        nodes, start = [], 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                nodes.append(subtree(start, start + (1 << level)))
                start += 1 << level
        return cls(size, nodes)


def root_of(hashes: Iterable[bytes]) -> bytes:
    """The Merkle root over already hashed leaves (or over whole blocks' hashes)."""
    frontier = Frontier()
    for hashed in hashes:
        frontier.push(hashed)
    return frontier.root()


@dataclass(frozen=True)
class TreeView:
    """Enough of a stored tree to hash any subtree: every whole block's hash, and the leaf
    hashes of the blocks a proof reaches into (see ``blocks_for``)."""

    size: int
    blocks: Sequence[bytes]
    leaves: Mapping[int, bytes]

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that RFC 6962's recursion produces."""
        count = end - start
        if count == 1:
            return self._leaf(start)
        if count & (count - 1) == 0 and count >= BLOCK and start % BLOCK == 0:
            return root_of(self.blocks[start // BLOCK : end // BLOCK])
        k = split(count)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def _leaf(self, index: int) -> bytes:
        try:
            return self.leaves[index]
        except KeyError:
            raise ProofError(f"leaf {index} was not loaded for this proof") from None


def blocks_for(*indices: int) -> set[int]:
    """The blocks whose leaves a proof about these leaf positions or tree sizes needs: the
    block of the leaf itself and the partial blocks at the edges of the trees."""
    return {index // BLOCK for index in indices if index >= 0}


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), the deepest sibling first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    return path[::-1]


def consistency_proof(first: int, second: int, subtree: Subtree) -> list[bytes]:
    """RFC 6962 PROOF(first, D[0:second]), the deepest node first."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from {first} to {second} leaves")
    if first in (0, second):
        return []
    path: list[bytes] = []
    start, end, whole = 0, second, True
    while True:
        count, inside = end - start, first - start
        if inside == count:
            if not whole:
                path.append(subtree(start, end))
            break
        k = split(count)
        if inside <= k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
            whole = False
    return path[::-1]


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root that a leaf and its inclusion path lead to."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn, hashed = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            hashed = node_hash(sibling, hashed)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            hashed = node_hash(hashed, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    return hashed


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ProofError("the inclusion proof leads to another root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2: the tree of ``second`` leaves extends the one of ``first``."""
    if not 0 <= first <= second:
        raise ProofError(f"a tree of {first} leaves cannot grow into one of {second}")
    if first == second or first == 0:
        if path:
            raise ProofError("the consistency proof should be empty")
        if first == second and first_root != second_root:
            raise ProofError("two trees of the same size with different roots")
        return
    if not path:
        raise ProofError("the consistency proof is empty")
    nodes = list(path)
    if first & (first - 1) == 0:
        nodes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for node in nodes[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != first_root:
        raise ProofError("the consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("the consistency proof does not lead to the second root")
