"""Signed control: who may change the policy, the model versions, the kill switch and the drift
alarms is whoever holds a trusted key, not whoever can write to the control topic.

A publisher signs, with Ed25519, the canonical JSON of the change together with the key it is
published under (so a signed policy cannot be replayed as another key's record); readers check
the signature against the public keys they trust, each of which may be limited to some kinds
of change. Unsigned, badly signed, unknown-key and future-dated records are refused and
counted; one older than what a reader follows is a replay and changes nothing (the follower
already ignores it). In development with no trusted keys configured, every record is
followed as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import ControlChanged, EventData
from tandem_shared.kafka import BatchHandler, Incoming, Rejected, Result
from tandem_shared.settings import RuntimeSettings
from tandem_shared.signing import (
    Signer,
    TrustedKey,
    canonical_bytes,
    signature_refusal,
    trusted_keys,
)

log = logging.getLogger(__name__)
# A change dated further ahead than this is refused: it would outrank every later one.
MAX_AHEAD = timedelta(minutes=5)


def statement(key: str, change: ControlChanged) -> bytes:
    """What is signed: the change, without its signature, and the key it is published under."""
    body = change.model_dump(mode="json", exclude={"signature", "key_id"})
    return canonical_bytes({"key": key, "change": body})


class ControlSigner(Signer):
    """Signs the control changes a process publishes."""

    @classmethod
    def from_settings(cls, runtime: RuntimeSettings) -> ControlSigner | None:
        """The signer of TANDEM_CONTROL_SIGNING_KEY; None without one (development)."""
        return cls.of_secret(runtime.control_signing_key, "TANDEM_CONTROL_SIGNING_KEY")

    def sign_change(self, event: Event[ControlChanged]) -> Event[ControlChanged]:
        data = self.signed_copy(event.data, lambda change: statement(event.subject, change))
        return Event(event.id, event.source, event.subject, data, event.time)


def signed(event: Event[ControlChanged], signer: ControlSigner | None) -> Event[ControlChanged]:
    """The event as published: signed when the process has a key."""
    return event if signer is None else signer.sign_change(event)


@dataclass
class ControlTrust:
    """The keys whose control changes a reader follows."""

    keys: dict[str, TrustedKey]
    # Nothing configured, in development: every change is followed, signed or not.
    open: bool = False
    # Told of every refusal (the reason): a service counts them in a metric.
    on_refused: Callable[[str], None] = field(default=lambda reason: None)

    @classmethod
    def from_settings(cls, runtime: RuntimeSettings) -> ControlTrust:
        """The keys of TANDEM_CONTROL_TRUSTED_KEYS ("KEY" or "KEY:kind+kind", comma-separated)."""
        keys = trusted_keys(runtime.control_trusted_keys, "TANDEM_CONTROL_TRUSTED_KEYS")
        return cls(keys, open=not keys and runtime.env == "development")

    def refusal(self, key: str, change: ControlChanged, now: datetime | None = None) -> str | None:
        """Why the change under ``key`` must not be followed (a metric label), or None."""
        if self.open:
            return None
        reason = signature_refusal(
            self.keys, change.signature, change.key_id, change.kind, lambda: statement(key, change)
        )
        if reason is None and change.changed_at > (now or utcnow()) + MAX_AHEAD:
            reason = "from_the_future"
        if reason is not None:
            log.warning("control change of %s by %s refused: %s", key, change.changed_by, reason)
            self.on_refused(reason)
        return reason


class TrustedControl:
    """A control handler that sees only the changes a trusted key signed; the others are
    dead-lettered with the reason."""

    def __init__(self, handler: BatchHandler[Event[EventData]], trust: ControlTrust) -> None:
        self.handler = handler
        self.trust = trust

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        results: list[Result | None] = []
        followed: list[Incoming[Event[EventData]]] = []
        for item in batch:
            event = item.item
            reason = (
                self.trust.refusal(event.subject, event.data)
                if isinstance(event.data, ControlChanged)
                else None
            )
            if reason is None:
                followed.append(item)
                results.append(None)
            else:
                results.append(Rejected(f"control change refused: {reason.replace('_', ' ')}"))
        handled = iter(await self.handler(followed) if followed else [])
        return [next(handled) if r is None else r for r in results]


@dataclass
class ControlKeys:
    """A process's side of signed control: the keys it trusts, and its own to sign with."""

    trust: ControlTrust
    signer: ControlSigner | None

    @classmethod
    def from_settings(cls, runtime: RuntimeSettings) -> ControlKeys:
        return cls(ControlTrust.from_settings(runtime), ControlSigner.from_settings(runtime))
