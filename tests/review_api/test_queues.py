"""Named queues: a review the policy sends to a queue is seen, claimed and decided only by
people whose token qualifies them for it, most urgent first; the general queue stays every
reviewer's."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from tandem_review_api.store import RoutedRecord
from tandem_shared.auth import Principal, TokenError, mint_token, verify_token
from tandem_shared.envelope import utcnow
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import Parts
from tests.review_api.test_api import NOW, auth, publish_routed, routed

pytestmark = pytest.mark.kafka
ONCOLOGY = "oncology-senior"


def token(subject: str, *qualifications: str, role: str = "reviewer") -> dict[str, str]:
    return auth(subject, role, qualifications=qualifications)


def test_a_token_carries_its_qualifications_in_the_configured_claim() -> None:
    settings = RuntimeSettings()
    minted = mint_token(settings, "ola", ["reviewer"], timedelta(hours=1), [ONCOLOGY])
    assert verify_token(settings, minted).qualifications == frozenset({ONCOLOGY})
    plain = mint_token(settings, "al", ["reviewer"])
    assert verify_token(settings, plain).qualifications == frozenset()
    other = RuntimeSettings(jwt_qualifications_claim="teams")
    teams = mint_token(other, "ola", ["reviewer"], qualifications=[ONCOLOGY])
    assert verify_token(other, teams).qualifications == frozenset({ONCOLOGY})
    assert verify_token(settings, teams).qualifications == frozenset()  # another claim's name


def test_a_qualifications_claim_that_is_not_a_list_of_names_is_refused() -> None:
    settings = RuntimeSettings()
    good = jwt.decode(
        mint_token(settings, "x", ["reviewer"]),
        options={"verify_signature": False},
    )
    bad = jwt.encode(
        {**good, "groups": "oncology-senior"},
        settings.jwt_secret.get_secret_value(),
        algorithm="HS256",
    )
    with pytest.raises(TokenError, match="groups claim must be a list"):
        verify_token(settings, bad)


async def waiting(api: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The open reviews as an auditor sees them (every queue), once ``count`` are there."""
    for _ in range(300):
        page = await api.get("/v1/reviews?status=pending", headers=auth("ivy", "auditor"))
        if len(items := page.json()["items"]) >= count:
            return list(items)
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} pending reviews")


async def test_a_named_queue_is_worked_only_by_those_qualified_for_it(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    urgent = routed("onc-1", priority=90).model_copy(update={"queue": ONCOLOGY})
    await publish_routed(kafka_settings, topics, [urgent, routed("gen-1", priority=10)])
    ida, ola = token("ida"), token("ola", ONCOLOGY)
    listed_all = await waiting(api, 2)
    assert {i["task_id"]: i["queue"] for i in listed_all} == {"onc-1": ONCOLOGY, "gen-1": None}
    everyone = {i["task_id"]: i["review_id"] for i in listed_all}
    onc = everyone["onc-1"]

    # Not qualified: the named queue's review is neither listed, nor read, nor taken.
    listed = (await api.get("/v1/reviews?status=pending", headers=ida)).json()["items"]
    assert [i["task_id"] for i in listed] == ["gen-1"]
    assert (await api.get(f"/v1/reviews/{onc}", headers=ida)).status_code == 404
    refused = await api.post(f"/v1/reviews/{onc}/claim", headers=ida)
    assert refused.status_code == 409 and ONCOLOGY in refused.json()["detail"]
    took = (await api.post("/v1/reviews/next", headers=ida)).json()
    assert took["review_id"] == everyone["gen-1"]  # the general queue's, though less urgent
    assert (await api.post("/v1/reviews/next", headers=ida)).status_code == 404

    # Qualified: the most urgent first, and it is theirs to decide.
    mine = (await api.post("/v1/reviews/next", headers=ola)).json()
    assert mine["review_id"] == onc
    body = {"outcome": "benign", "rationale": "seen"}
    decided = await api.post(f"/v1/reviews/{onc}/decision", json=body, headers=ola)
    assert decided.json()["status"] == "decided"


async def test_a_named_queue_nobody_qualified_asks_is_unattended_until_someone_does(
    parts: Parts,
) -> None:
    """routed() makes reviews routed at NOW, days ago: they have waited since then."""
    onc = routed("onc-2").model_copy(update={"queue": ONCOLOGY})
    await parts.store.ingest(
        [RoutedRecord(onc, None), RoutedRecord(routed("gen-2"), None)], [], NOW
    )
    before = utcnow()
    waited = (before - NOW).total_seconds()
    assert await parts.store.unattended(before) == {ONCOLOGY: pytest.approx(waited, abs=5)}

    # Asking for work without the qualification changes nothing; with it, the queue is attended.
    await parts.reviews.claim(None, Principal("ida", frozenset({"reviewer"})))
    assert (await parts.store.unattended(utcnow()))[ONCOLOGY] >= waited
    qualified = Principal("ola", frozenset({"reviewer"}), qualifications=frozenset({ONCOLOGY}))
    claimed = await parts.reviews.claim(None, qualified)
    assert (await parts.store.unattended(utcnow()))[ONCOLOGY] < 5
    parts.metrics.set_unattended(await parts.store.unattended(utcnow()))
    assert parts.metrics.queue_unattended.labels(ONCOLOGY)._value.get() < 5

    # Decided: nothing waits there any more, and the gauge reads 0.
    await parts.reviews.decide(claimed.review_id, qualified, "benign", "seen")
    assert await parts.store.unattended(utcnow()) == {}
    parts.metrics.set_unattended({})
    assert parts.metrics.queue_unattended.labels(ONCOLOGY)._value.get() == 0.0
