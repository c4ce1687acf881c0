"""The Merkle tree against vectors made by transparency-dev/merkle (see vectors/main.go)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tandem_audit_sink.merkle import (
    BLOCK,
    EMPTY_ROOT,
    Frontier,
    ProofError,
    TreeView,
    blocks_for,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors/merkle.json").read_text())
LEAVES = [leaf_hash(entry.encode()) for entry in VECTORS["leaves"]]


def blocks(leaves: list[bytes]) -> list[bytes]:
    return [root_of(leaves[i : i + BLOCK]) for i in range(0, len(leaves) - BLOCK + 1, BLOCK)]


def view(size: int, *edges: int) -> TreeView:
    """What the ledger loads for a proof: all block hashes, the leaves of the edge blocks only."""
    wanted = blocks_for(*edges, size)
    leaves = {i: LEAVES[i] for i in range(size) if i // BLOCK in wanted}
    return TreeView(size, blocks(LEAVES[:size]), leaves)


def test_hashes_follow_rfc_6962() -> None:
    assert EMPTY_ROOT.hex() == VECTORS["roots"][0]
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert node_hash(LEAVES[0], LEAVES[1]).hex() == VECTORS["roots"][2]


def test_every_root_up_to_700_leaves() -> None:
    frontier = Frontier()
    completed = []
    for size, expected in enumerate(VECTORS["roots"]):
        assert frontier.root().hex() == expected, size
        assert root_of(LEAVES[:size]).hex() == expected
        if size < len(LEAVES):
            done = frontier.push(LEAVES[size])
            if done is not None:
                completed.append(done)
    assert completed == list(enumerate(blocks(LEAVES)))


@pytest.mark.parametrize("size", [1, 5, 255, 256, 257, 300, 512, 513, 700])
def test_the_frontier_rebuilt_from_stored_blocks_grows_the_same(size: int) -> None:
    rebuilt = Frontier.at(size, view(size, size - 1).subtree)
    assert rebuilt.root().hex() == VECTORS["roots"][size]
    for leaf in LEAVES[size:]:
        rebuilt.push(leaf)
    assert rebuilt.root().hex() == VECTORS["roots"][len(LEAVES)]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: f"{c['index']}@{c['size']}")
def test_inclusion_proofs(case: dict[str, Any]) -> None:
    index, size = case["index"], case["size"]
    proof = inclusion_proof(index, size, view(size, index).subtree)
    assert [p.hex() for p in proof] == case["proof"]
    root = bytes.fromhex(VECTORS["roots"][size])
    verify_inclusion(index, size, LEAVES[index], proof, root)


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: f"{c['size1']}-{c['size2']}")
def test_consistency_proofs(case: dict[str, Any]) -> None:
    first, second = case["size1"], case["size2"]
    proof = consistency_proof(first, second, view(second, first).subtree)
    assert [p.hex() for p in proof] == case["proof"]
    roots = VECTORS["roots"]
    verify_consistency(
        first, second, bytes.fromhex(roots[first]), bytes.fromhex(roots[second]), proof
    )


def test_wrong_inclusion_proofs_fail() -> None:
    size, index = 300, 257
    root = bytes.fromhex(VECTORS["roots"][size])
    proof = inclusion_proof(index, size, view(size, index).subtree)
    bad_cases: list[tuple[int, int, bytes, list[bytes]]] = [
        (index, size, LEAVES[index + 1], proof),  # another leaf
        (index + 1, size, LEAVES[index], proof),  # another position
        (index, 2 * size, LEAVES[index], proof),  # another size
        (index, size, LEAVES[index], proof[:-1]),  # too short
        (index, size, LEAVES[index], [*proof, proof[0]]),  # too long
        (index, size, LEAVES[index], [bytes(32), *proof[1:]]),  # a changed node
    ]
    for idx, n, leaf, path in bad_cases:
        with pytest.raises(ProofError):
            verify_inclusion(idx, n, leaf, path, root)
    with pytest.raises(ProofError, match="not in a tree"):
        inclusion_proof(300, 300, view(300, 0).subtree)


def test_wrong_consistency_proofs_fail() -> None:
    roots = [bytes.fromhex(r) for r in VECTORS["roots"]]
    proof = consistency_proof(257, 513, view(513, 257).subtree)
    bad_cases: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (257, 513, roots[256], roots[513], proof),  # another first root
        (257, 513, roots[257], roots[512], proof),  # another second root
        (256, 513, roots[256], roots[513], proof),  # another first size
        (257, 513, roots[257], roots[513], proof[:-1]),
        (257, 513, roots[257], roots[513], [*proof, proof[0]]),
        (257, 513, roots[257], roots[513], []),
        (300, 300, roots[300], roots[299], []),
        (513, 257, roots[513], roots[257], proof),
    ]
    for first, second, r1, r2, path in bad_cases:
        with pytest.raises(ProofError):
            verify_consistency(first, second, r1, r2, path)


def test_a_proof_that_needs_an_unloaded_leaf_says_so() -> None:
    partial = TreeView(300, blocks(LEAVES[:300]), {})
    with pytest.raises(ProofError, match="was not loaded"):
        inclusion_proof(3, 300, partial.subtree)
