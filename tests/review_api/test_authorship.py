"""Decisions have a known author: on the real broker, a decision on Kafka that claims people
as its author closes a review only when the review API's key signed it; forged ones are
dead-lettered with the reason and counted, and an automatic decision never takes the place
of people's."""

from __future__ import annotations

import base64

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr, ValidationError
from tandem_review_api.authorship import SOURCE, DecisionSigner, DecisionTrust, statement
from tandem_review_api.settings import ReviewApiSettings
from tandem_shared.envelope import Event, decode
from tandem_shared.events import DeadLetter, DecisionMade, FirstLook
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.signing import private_text, public_text
from tandem_shared.topics import Topics

from tests.kafka_utils import TopicReader
from tests.review_api.apps import review_api
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed
from tests.service_utils import eventually, publish_events

KEY = Ed25519PrivateKey.generate()
OLD_KEY = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def settings(trusted: str = "") -> ReviewApiSettings:
    key = SecretStr(private_text(KEY))
    return ReviewApiSettings(decision_signing_key=key, decision_trusted_keys=trusted)


def made(task_id: str, decided_by: str = "human", outcome: str = "malignant") -> DecisionMade:
    item = routed(task_id)
    return DecisionMade(
        task_id=task_id,
        task_type=item.task.task_type,
        outcome=outcome,
        decided_by=decided_by,  # type: ignore[arg-type]
        confidence=0.8,
        model=item.score.model,
        policy=item.policy,
        reviewers=[] if decided_by == "model" else ["zoe"],
        submitted_at=NOW,
        decided_at=NOW,
    )


def event(
    decision: DecisionMade, by: Ed25519PrivateKey | None, source: str = SOURCE
) -> Event[DecisionMade]:
    unsigned = Event.derived(decision, source=source, subject=decision.task_id, stage="decision")
    return unsigned if by is None else DecisionSigner(by).sign_decision(unsigned)


def trust() -> DecisionTrust:
    return DecisionTrust.from_settings(settings())


# --- the rules, without a broker ---------------------------------------------------------------


def test_the_signature_covers_the_decision_its_source_and_its_id() -> None:
    good = event(made("t-1"), KEY)
    assert trust().refusal(good.source, good.id, good.data) is None
    changed = good.data.model_copy(update={"outcome": "benign"})
    assert trust().refusal(good.source, good.id, changed) == "bad_signature"
    elsewhere = event(made("t-2"), None).id
    assert trust().refusal(good.source, elsewhere, good.data) == "bad_signature"
    # Its bytes as they travel: decoded again, the same statement.
    again = decode(good.value(), good.headers(), {"tandem.decision.made.v1": DecisionMade})
    assert isinstance(again.data, DecisionMade)
    assert statement(again.source, again.id, again.data) == statement(
        good.source, good.id, good.data
    )
    assert trust().refusal(again.source, again.id, again.data) is None


def test_the_signature_covers_the_first_looks_and_an_older_decision_still_verifies() -> None:
    looks = [FirstLook(reviewer="zoe", before="benign", after="malignant", changed=True)]
    blind = event(made("t-1").model_copy(update={"first_looks": looks}), KEY)
    assert trust().refusal(blind.source, blind.id, blind.data) is None
    hidden = blind.data.model_copy(update={"first_looks": []})
    assert trust().refusal(blind.source, blind.id, hidden) == "bad_signature"
    # Signed before decisions had first looks: its statement did not name them.
    older = event(made("t-2"), KEY)
    assert b"first_looks" not in statement(older.source, older.id, older.data)
    assert trust().refusal(older.source, older.id, older.data) is None


@pytest.mark.parametrize(
    ("by", "source", "decided_by", "refused"),
    [
        (None, SOURCE, "human", "unsigned"),
        (None, "tandem/router", "human", "unsigned"),  # people's, whatever source it names
        (None, SOURCE, "policy", "unsigned"),  # the review API's fallback
        (STRANGER, SOURCE, "human", "unknown_key"),
        (OLD_KEY, SOURCE, "human", "unknown_key"),
        (KEY, SOURCE, "human", None),
        (None, "tandem/router", "model", None),  # automatic: never closes a review
        (None, "tandem/router", "policy", None),
    ],
)
def test_which_decisions_need_a_trusted_signature(
    by: Ed25519PrivateKey | None, source: str, decided_by: str, refused: str | None
) -> None:
    e = event(made("t-1", decided_by), by, source)
    assert trust().refusal(e.source, e.id, e.data) == refused


def test_keys_of_a_rotation_stay_trusted_and_development_without_keys_trusts_all() -> None:
    rotating = DecisionTrust.from_settings(settings(public_text(OLD_KEY)))
    old = event(made("t-1"), OLD_KEY)
    assert rotating.refusal(old.source, old.id, old.data) is None
    forged = event(made("t-1"), None)
    assert DecisionTrust.from_settings(ReviewApiSettings()).open
    assert (
        DecisionTrust.from_settings(ReviewApiSettings()).refusal(
            forged.source, forged.id, forged.data
        )
        is None
    )


def test_production_needs_a_decision_signing_key() -> None:
    production = RuntimeSettings(
        env="production",
        jwt_secret=SecretStr("s" * 32),
        control_trusted_keys=public_text(KEY),
    )
    with pytest.raises(ValidationError, match="DECISION_SIGNING_KEY"):
        ReviewApiSettings(runtime=production)
    key = SecretStr(base64.b64encode(b"\x01" * 32).decode())
    assert ReviewApiSettings(runtime=production, decision_signing_key=key).decision_signing_key


# --- on the real broker -----------------------------------------------------------------------


async def claimable(api: httpx.AsyncClient, review_id: str) -> bool:
    who = auth("alice", "reviewer")
    claim = await api.post(f"/v1/reviews/{review_id}/claim", headers=who)
    if claim.status_code == 200:
        await api.post(f"/v1/reviews/{review_id}/release", headers=who)
        return True
    assert claim.status_code == 409, claim.text
    return False


@pytest.mark.kafka
async def test_only_a_signed_peoples_decision_closes_a_review(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    key = SecretStr(private_text(KEY))
    async with review_api(kafka_settings, database_url, decision_signing_key=key) as (api, _):
        ids = ["unsigned", "stranger", "tampered", "signed"]
        await publish_routed(kafka_settings, topics, [routed(i) for i in ids])
        reviews = {r["task_id"]: r["review_id"] for r in await pending(api, len(ids))}
        tampered = event(made("tampered"), KEY)
        tampered.data = tampered.data.model_copy(update={"outcome": "benign"})
        forged = [
            event(made("unsigned"), None),
            event(made("stranger"), STRANGER),
            tampered,
            # An automatic decision for a task people review is none the router made.
            event(made("unsigned", "model", "benign"), None, source="tandem/router"),
            event(made("signed"), KEY),
        ]
        await publish_events(kafka_settings, [Outgoing(topics.decisions, e) for e in forged])

        async def signed_one_closed() -> bool:
            return not await claimable(api, reviews["signed"])

        await eventually(signed_one_closed, "the signed decision to close its review")
        async with TopicReader(kafka_settings.bootstrap_servers, topics.deadletter) as letters:
            records = await letters.until(3)
            await letters.settle()
        why = {
            DeadLetter.model_validate_json(r.value).origin_key: DeadLetter.model_validate_json(
                r.value
            ).error
            for r in letters.records
        }
        assert why == {
            "unsigned": "decision refused: unsigned",
            "stranger": "decision refused: unknown key",
            "tampered": "decision refused: bad signature",
        }, records
        for task_id in ("unsigned", "stranger", "tampered"):
            assert await claimable(api, reviews[task_id]), task_id
            task = (await api.get(f"/v1/tasks/{task_id}", headers=auth("a", "admin"))).json()
            assert task["decision"] is None, task
        signed = (await api.get("/v1/tasks/signed", headers=auth("a", "admin"))).json()
        assert signed["decision"]["outcome"] == "malignant"
        metrics = (await api.get("/metrics")).text
        for reason in ("unsigned", "unknown_key", "bad_signature"):
            assert f'tandem_decisions_refused_total{{reason="{reason}"}} 1.0' in metrics


@pytest.mark.kafka
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_review_apis_own_decisions_are_signed_and_trusted_back(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    key = SecretStr(private_text(KEY))
    async with review_api(kafka_settings, database_url, decision_signing_key=key) as (api, _):
        await publish_routed(kafka_settings, topics, [routed("own-1")])
        [review] = await pending(api, 1)
        who = auth("alice", "reviewer")
        assert (await api.post(f"/v1/reviews/{review['review_id']}/claim", headers=who)).is_success
        decided = await api.post(
            f"/v1/reviews/{review['review_id']}/decision",
            json={"outcome": "malignant", "rationale": "looked"},
            headers=who,
        )
        assert decided.json()["status"] == "decided"
        async with TopicReader(kafka_settings.bootstrap_servers, topics.decisions) as reader:
            [record] = await reader.until(1)
        published = decode(record.value, record.headers, {"tandem.decision.made.v1": DecisionMade})
        assert isinstance(published.data, DecisionMade)
        assert published.data.key_id == DecisionSigner(KEY).key_id
        assert trust().refusal(published.source, published.id, published.data) is None
        async with TopicReader(kafka_settings.bootstrap_servers, topics.deadletter) as letters:
            assert await letters.settle() == []
