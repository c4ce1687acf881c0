"""Ed25519 keys as settings hold them, and the one spelling of a value that gets signed.

Keys are text: the raw 32 bytes in base64 (what `tandem secrets` and `tandem audit keygen`
write), or PKCS#8 PEM for a private key. A public key is named by its key id, the first 16 hex
digits of its SHA-256, so a record says which key signed it and keys can be rotated."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, SecretStr

# A record that carries its own signature: fields ``signature`` and ``key_id``.
Signed = TypeVar("Signed", bound=BaseModel)


def to_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive time is taken to be UTC already."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def rfc3339(value: datetime) -> str:
    """UTC with microseconds and a Z: one spelling per instant."""
    return to_utc(value).isoformat(timespec="microseconds")[:-6] + "Z"


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def canonical_bytes(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 as is, times as ``rfc3339``; raises ValueError for what
    has no single spelling (lone surrogates, integers beyond 64 bits). Values come from strict
    JSON, which has no NaN or infinity to spell."""
    try:
        return orjson.dumps(value, default=_default, option=_CANONICAL)
    except orjson.JSONEncodeError as exc:
        raise ValueError(str(exc)) from exc


def private_key(text: str, what: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from its text; ValueError naming ``what`` when it is not one."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise ValueError(f"{what} cannot be read: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{what} must be an Ed25519 key")
    return key


def public_key(text: str, what: str) -> Ed25519PublicKey:
    """An Ed25519 public key from the base64 of its 32 raw bytes."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise ValueError(f"{what} cannot be read: {exc}") from exc


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The base64 of a public key's 32 raw bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def private_text(key: Ed25519PrivateKey) -> str:
    """The base64 of a private key's 32 raw bytes, as settings hold it."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode("ascii")


def key_id(public: str) -> str:
    """A short name for a public key (base64 of its 32 raw bytes): its SHA-256, 16 hex digits."""
    return hashlib.sha256(base64.b64decode(public)).hexdigest()[:16]


class Signer:
    """An Ed25519 private key, named by the key id of its public half."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.verifying_key = key.public_key()
        self.public_key = public_text(key)
        self.key_id = key_id(self.public_key)

    @classmethod
    def of_secret(cls, secret: SecretStr | None, what: str) -> Self | None:
        """The signer of a key setting (``what`` names it in errors); None when it is unset."""
        return None if secret is None else cls(private_key(secret.get_secret_value(), what))

    def sign(self, statement: bytes) -> str:
        """The signature of ``statement``, in base64."""
        return base64.b64encode(self._key.sign(statement)).decode("ascii")

    def signed_copy(self, record: Signed, statement: Callable[[Signed], bytes]) -> Signed:
        """``record`` with its ``signature`` and ``key_id`` set: the signature is over the
        statement of the record without them."""
        unsigned = record.model_copy(update={"signature": None, "key_id": None})
        signature = self.sign(statement(unsigned))
        return unsigned.model_copy(update={"signature": signature, "key_id": self.key_id})


@dataclass(frozen=True)
class TrustedKey:
    key: Ed25519PublicKey
    kinds: frozenset[str] | None  # None: every kind


def trusted_keys(text: str, what: str) -> dict[str, TrustedKey]:
    """Public keys by key id, from "KEY" or "KEY:kind+kind" entries, comma-separated; ``what``
    names the setting in errors."""
    keys: dict[str, TrustedKey] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        key_text, _, kinds = entry.partition(":")
        public = public_key(key_text, f"a key of {what}")
        limited = frozenset(k for k in kinds.split("+") if k) if kinds else None
        keys[key_id(public_text(public))] = TrustedKey(public, limited)
    return keys


def signature_refusal(
    keys: Mapping[str, TrustedKey],
    signature: str | None,
    signed_by: str | None,
    kind: str,
    statement: Callable[[], bytes],
) -> str | None:
    """Why a record of ``kind`` signed (or not) this way must not be trusted, as a metric
    label, or None. The statement is spelt only when there is a signature to check."""
    if signature is None or signed_by is None:
        return "unsigned"
    trusted = keys.get(signed_by)
    if trusted is None:
        return "unknown_key"
    if trusted.kinds is not None and kind not in trusted.kinds:
        return "kind_not_allowed"
    try:
        trusted.key.verify(base64.b64decode(signature), statement())
    except (InvalidSignature, ValueError):
        return "bad_signature"
    return None
