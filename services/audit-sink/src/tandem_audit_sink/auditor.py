"""What an auditor runs with nothing but a proof, the event and a checkpoint it already trusts.

No database and no trust in the ledger's operator: the entry is hashed here, the path is
followed here, and the checkpoint's root is one the auditor kept (or one whose signature and
consistency with a kept checkpoint are checked here).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from tandem_audit_sink.checkpoint import Checkpoint, CheckpointError
from tandem_audit_sink.ledger import entry_leaf
from tandem_audit_sink.merkle import ProofError, verify_consistency, verify_inclusion
from tandem_audit_sink.roots import Root


def check_inclusion(
    proof: dict[str, Any], trusted: Checkpoint, event: Any | None = None
) -> dict[str, Any]:
    """Check that the proof's entry is in the tree of the trusted checkpoint; with ``event``
    (its data), that the entry records exactly that. Returns the entry."""
    try:
        entry_text, index, path = proof["entry"], int(proof["leaf_index"]), proof["path"]
        size = int(proof["tree_size"])
        nodes = [bytes.fromhex(node) for node in path]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"not an inclusion proof: {exc}") from exc
    if size != trusted.tree_size:
        raise ProofError(
            f"the proof is for a tree of {size} entries, the trusted checkpoint has "
            f"{trusted.tree_size}: ask for a proof at that size"
        )
    verify_inclusion(index, size, entry_leaf(entry_text), nodes, bytes.fromhex(trusted.root_hash))
    entry: dict[str, Any] = json.loads(entry_text)
    if event is not None and entry.get("data") != event:
        raise ProofError("the proven entry records other data than the event given")
    return entry


def check_consistency(
    proof: dict[str, Any], trusted: Checkpoint, trusted_keys: Collection[str]
) -> Checkpoint:
    """Check that the proof's newer checkpoint is signed by a trusted key and extends the
    trusted one; return it, to be trusted from now on."""
    try:
        first, second = Checkpoint.of(proof["first"]), Checkpoint.of(proof["second"])
        nodes = [bytes.fromhex(node) for node in proof["path"]]
    except (KeyError, TypeError, ValueError, CheckpointError) as exc:
        raise ProofError(f"not a consistency proof: {exc}") from exc
    if (first.tree_size, first.root_hash) != (trusted.tree_size, trusted.root_hash):
        raise ProofError("the proof starts from another checkpoint than the trusted one")
    try:
        second.check(trusted_keys)
    except CheckpointError as exc:
        raise ProofError(str(exc)) from exc
    verify_consistency(
        first.tree_size,
        second.tree_size,
        bytes.fromhex(first.root_hash),
        bytes.fromhex(second.root_hash),
        nodes,
    )
    return second


def check_under_root(proof: dict[str, Any], trusted_keys: Collection[str]) -> Checkpoint:
    """In a ledger of several shards: check that the proof's root is signed by a trusted key
    and names the proof's checkpoint as its shard's head, and that the checkpoint is signed by
    a trusted key too; return the checkpoint, which the entry's path must then lead to."""
    try:
        root = Root.of(proof["root"])
        checkpoint = Checkpoint.of(proof["checkpoint"])
        shard = int(proof["shard"])
    except (KeyError, TypeError, ValueError, CheckpointError) as exc:
        raise ProofError(f"not a proof under a root: {exc}") from exc
    try:
        root.check(trusted_keys)
        checkpoint.check(trusted_keys)
    except CheckpointError as exc:
        raise ProofError(str(exc)) from exc
    head = root.head(shard)
    if head is None or not head.names(checkpoint):
        raise ProofError(f"the root does not name the proof's checkpoint as shard {shard}'s head")
    return checkpoint
