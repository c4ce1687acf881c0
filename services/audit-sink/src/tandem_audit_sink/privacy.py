"""Private fields: values stored as keyed hashes, never in clear.

A field named in the configuration, wherever it appears in an event's data, is replaced by
``hmac-sha256:<hex>`` of its canonical JSON under the ledger's privacy key. The entry is hashed
after that, so the ledger verifies without the values; whoever holds the key can still tell
whether a given value is the one recorded (``Redactor.hashed``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from typing import Any

from tandem_audit_sink.ledger import canonical_json

PREFIX = "hmac-sha256:"


class Redactor:
    def __init__(self, fields: Collection[str], key: bytes) -> None:
        if fields and not key:
            raise ValueError("private fields are named but no privacy key is set")
        self.fields = frozenset(fields)
        self._key = key

    def hashed(self, value: Any) -> str:
        digest = hmac.new(self._key, canonical_json(value).encode("utf-8"), hashlib.sha256)
        return PREFIX + digest.hexdigest()

    def __call__(self, value: Any) -> Any:
        """A copy of ``value`` with every private field's value hashed, at any depth."""
        if not self.fields:
            return value
        if isinstance(value, dict):
            return {k: self.hashed(v) if k in self.fields else self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


NO_REDACTION = Redactor((), b"")
