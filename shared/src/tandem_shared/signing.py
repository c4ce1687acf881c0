"""Ed25519 keys as settings hold them, and the one spelling of a value that gets signed.

Keys are text: the raw 32 bytes in base64 (what `tandem secrets` and `tandem audit keygen`
write), or PKCS#8 PEM for a private key. A public key is named by its key id, the first 16 hex
digits of its SHA-256, so a record says which key signed it and keys can be rotated."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


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
