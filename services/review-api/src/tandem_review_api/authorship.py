"""Decisions with a known author: a people's decision closes a review only when the review API
signed it.

The review API signs, with Ed25519, every decision it publishes (people's, and the policy's
fallback for an overdue review) over the canonical JSON of the decision, its source and its
event id. A decision read back from Kafka that claims people or the review API as its author
changes nothing unless a trusted key signed it: anyone who can write to the decisions topic
could otherwise close an open review. The router's automatic decisions are not signed (a
signature costs more than the rest of a routed task); they never close a review, and a
task that people review takes its decision from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from tandem_shared.envelope import Event
from tandem_shared.events import DecisionMade
from tandem_shared.signing import (
    Signer,
    TrustedKey,
    canonical_bytes,
    signature_refusal,
    trusted_keys,
)

from tandem_review_api.settings import ReviewApiSettings

log = logging.getLogger(__name__)
SOURCE = "tandem/review-api"
KIND = "decision"
# Fields added to DecisionMade after decisions were first signed.
ADDED_FIELDS = ("first_looks", "review_times", "segment")


def statement(source: str, event_id: str, decision: DecisionMade) -> bytes:
    """What is signed: the decision without its signature, under its source and id. Fields
    added to the contract since are left out while they hold nothing, so a decision signed
    before they existed still verifies."""
    empty = {name for name in ADDED_FIELDS if not getattr(decision, name)}
    body = decision.model_dump(mode="json", exclude={"signature", "key_id"} | empty)
    return canonical_bytes({"source": source, "id": event_id, "decision": body})


class DecisionSigner(Signer):
    """Signs the decisions the review API publishes."""

    @classmethod
    def from_settings(cls, settings: ReviewApiSettings) -> DecisionSigner | None:
        """The signer of TANDEM_REVIEW_API_DECISION_SIGNING_KEY; None without one."""
        key = settings.decision_signing_key
        return cls.of_secret(key, "TANDEM_REVIEW_API_DECISION_SIGNING_KEY")

    def sign_decision(self, event: Event[DecisionMade]) -> Event[DecisionMade]:
        data = self.signed_copy(event.data, lambda d: statement(event.source, event.id, d))
        return Event(event.id, event.source, event.subject, data, event.time)


def signed(event: Event[DecisionMade], signer: DecisionSigner | None) -> Event[DecisionMade]:
    """The decision as published: signed when the review API has a key."""
    return event if signer is None else signer.sign_decision(event)


def claims_people(source: str, decision: DecisionMade) -> bool:
    """Whether the decision says people or the review API made it: only those close reviews,
    so only those need a signature."""
    return decision.decided_by == "human" or source == SOURCE


@dataclass
class DecisionTrust:
    """The keys whose decisions may close a review: the review API's own, and those it used
    before a rotation."""

    keys: dict[str, TrustedKey]
    # No key at all, in development: every decision is taken as it says.
    open: bool = False
    # Told of every refusal (the reason): the review API counts them in a metric.
    on_refused: Callable[[str], None] = field(default=lambda reason: None)

    @classmethod
    def from_settings(cls, settings: ReviewApiSettings) -> DecisionTrust:
        keys = trusted_keys(
            settings.decision_trusted_keys, "TANDEM_REVIEW_API_DECISION_TRUSTED_KEYS"
        )
        signer = DecisionSigner.from_settings(settings)
        if signer is not None:
            keys[signer.key_id] = TrustedKey(signer.verifying_key, None)
        return cls(keys, open=not keys and settings.runtime.env == "development")

    def refusal(self, source: str, event_id: str, decision: DecisionMade) -> str | None:
        """Why the decision must change nothing here (a metric label), or None."""
        if self.open or not claims_people(source, decision):
            return None
        reason = signature_refusal(
            self.keys,
            decision.signature,
            decision.key_id,
            KIND,
            lambda: statement(source, event_id, decision),
        )
        if reason is not None:
            log.warning(
                "decision %s on task %s from %s refused: %s",
                event_id,
                decision.task_id,
                source,
                reason,
            )
            self.on_refused(reason)
        return reason
