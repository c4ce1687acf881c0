"""Signed checkpoints: a tree size, its root and a time, signed with the ledger's Ed25519 key.

What is signed is the canonical JSON of origin, tree size, root hash and time, so a checkpoint
can be checked by anyone who has its public key, with nothing from the ledger.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from tandem_shared.signing import key_id, private_key, private_text, public_text, rfc3339, to_utc

from tandem_audit_sink.ledger import canonical_json


class CheckpointError(ValueError):
    """A checkpoint whose signature does not hold, or whose key is not trusted."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: str
    issued_at: datetime
    public_key: str
    signature: str

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def statement(self) -> bytes:
        return signed_statement(self.origin, self.tree_size, self.root_hash, self.issued_at)

    def document(self) -> dict[str, Any]:
        return asdict(self) | {"issued_at": rfc3339(self.issued_at), "key_id": self.key_id}

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Checkpoint:
        try:
            return cls(
                origin=str(doc["origin"]),
                tree_size=int(doc["tree_size"]),
                root_hash=str(doc["root_hash"]),
                issued_at=to_utc(datetime.fromisoformat(str(doc["issued_at"]))),
                public_key=str(doc["public_key"]),
                signature=str(doc["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a checkpoint: {exc}") from exc

    def check(self, trusted_keys: Collection[str] | None = None) -> None:
        """Raise unless the signature holds, and (given trusted keys) the key is one of them."""
        check_signature(
            f"checkpoint at size {self.tree_size}",
            self.public_key,
            self.signature,
            self.statement(),
            trusted_keys,
        )


def check_signature(
    what: str,
    public_key: str,
    signature: str,
    statement: bytes,
    trusted_keys: Collection[str] | None,
) -> None:
    """Raise CheckpointError (naming ``what``) unless the Ed25519 signature (base64) of the
    statement holds under the public key (base64), and, given trusted keys, the key is one."""
    if trusted_keys is not None and public_key not in trusted_keys:
        raise CheckpointError(f"{what} is signed by untrusted key {key_id(public_key)}")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        key.verify(base64.b64decode(signature), statement)
    except (InvalidSignature, ValueError) as exc:
        raise CheckpointError(f"{what} has a signature that does not hold") from exc


def signed_statement(origin: str, tree_size: int, root_hash: str, issued_at: datetime) -> bytes:
    doc = {
        "origin": origin,
        "tree_size": tree_size,
        "root_hash": root_hash,
        "issued_at": rfc3339(issued_at),
    }
    return canonical_json(doc).encode("utf-8")


class Signer:
    """The ledger's signing key: raw 32-byte Ed25519 seeds in base64, or PKCS#8 PEM."""

    def __init__(self, private_key: Ed25519PrivateKey, origin: str) -> None:
        self._key = private_key
        self.origin = origin
        self.public_key = public_text(private_key)
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_text(cls, text: str, origin: str) -> Signer:
        return cls(private_key(text, "the audit signing key"), origin)

    @classmethod
    def generate(cls, origin: str) -> Signer:
        return cls(Ed25519PrivateKey.generate(), origin)

    def private_text(self) -> str:
        return private_text(self._key)

    def sign_bytes(self, statement: bytes) -> str:
        """The signature (base64) of a statement: a checkpoint's, or a root's over the shards."""
        return base64.b64encode(self._key.sign(statement)).decode("ascii")

    def for_origin(self, origin: str) -> Signer:
        """The same key signing under another origin (a shard's)."""
        return Signer(self._key, origin)

    def sign(self, tree_size: int, root_hash: str, issued_at: datetime) -> Checkpoint:
        statement = signed_statement(self.origin, tree_size, root_hash, issued_at)
        signature = self.sign_bytes(statement)
        return Checkpoint(
            origin=self.origin,
            tree_size=tree_size,
            root_hash=root_hash,
            issued_at=to_utc(issued_at),
            public_key=self.public_key,
            signature=signature,
        )
