"""Signed roots over the shards: the latest checkpoint of every shard, signed as one statement.

Pure: no database. A sharded ledger is one RFC 6962 log per shard, each with its own signed
checkpoints (their origin names the shard); a root ties them together. What is signed is the
canonical JSON of the ledger's origin, the time and, per shard, its origin, tree size and root
hash, so a root can be checked by anyone who has the public key, and an entry's inclusion proof
reaches a root through its shard's checkpoint: path -> checkpoint root -> the root's head.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from tandem_shared.signing import key_id, rfc3339, to_utc

from tandem_audit_sink.checkpoint import Checkpoint, CheckpointError, Signer, check_signature
from tandem_audit_sink.ledger import canonical_json, parse


def shard_origin(origin: str, shard: int, shards: int) -> str:
    """The origin a shard's checkpoints are signed under. One shard keeps the ledger's own, so a
    ledger that was never sharded reads as it always did; shard 0 keeps it when there are more."""
    return origin if shard == 0 else f"{origin}/shard-{shard}"


@dataclass(frozen=True)
class ShardHead:
    """A shard's latest checkpoint as a root names it."""

    shard: int
    origin: str
    tree_size: int
    root_hash: str

    @classmethod
    def of(cls, shard: int, checkpoint: Checkpoint) -> ShardHead:
        return cls(shard, checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash)

    def names(self, checkpoint: Checkpoint) -> bool:
        """Whether this head is that checkpoint (same origin, size and root)."""
        return (self.origin, self.tree_size, self.root_hash) == (
            checkpoint.origin,
            checkpoint.tree_size,
            checkpoint.root_hash,
        )


@dataclass(frozen=True)
class Root:
    origin: str
    issued_at: datetime
    heads: tuple[ShardHead, ...]
    public_key: str
    signature: str

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the signed statement: names the root."""
        return hashlib.sha256(self.statement()).hexdigest()

    def statement(self) -> bytes:
        return root_statement(self.origin, self.issued_at, self.heads)

    def head(self, shard: int) -> ShardHead | None:
        return next((h for h in self.heads if h.shard == shard), None)

    def document(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "issued_at": rfc3339(self.issued_at),
            "heads": [asdict(h) for h in self.heads],
            "digest": self.digest,
            "public_key": self.public_key,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Root:
        try:
            return cls(
                origin=str(doc["origin"]),
                issued_at=to_utc(datetime.fromisoformat(str(doc["issued_at"]))),
                heads=heads_of(doc["heads"]),
                public_key=str(doc["public_key"]),
                signature=str(doc["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a root: {exc}") from exc

    def check(self, trusted_keys: Collection[str] | None = None) -> None:
        """Raise unless the signature holds, and (given trusted keys) the key is one of them."""
        check_signature(
            f"root {self.digest[:12]}",
            self.public_key,
            self.signature,
            self.statement(),
            trusted_keys,
        )


def heads_of(raw: Any) -> tuple[ShardHead, ...]:
    """Heads from their JSON (a list of objects, or its text)."""
    items = parse(raw) if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise ValueError("heads must be a list")
    return tuple(
        ShardHead(int(h["shard"]), str(h["origin"]), int(h["tree_size"]), str(h["root_hash"]))
        for h in items
    )


def heads_text(heads: Sequence[ShardHead]) -> str:
    return canonical_json([asdict(h) for h in heads])


def root_statement(origin: str, issued_at: datetime, heads: Sequence[ShardHead]) -> bytes:
    doc = {
        "origin": origin,
        "issued_at": rfc3339(issued_at),
        "heads": [asdict(h) for h in sorted(heads, key=lambda h: h.shard)],
    }
    return canonical_json(doc).encode("utf-8")


def sign_root(signer: Signer, heads: Sequence[ShardHead], issued_at: datetime) -> Root:
    ordered = tuple(sorted(heads, key=lambda h: h.shard))
    statement = root_statement(signer.origin, issued_at, ordered)
    return Root(
        signer.origin, to_utc(issued_at), ordered, signer.public_key, signer.sign_bytes(statement)
    )
