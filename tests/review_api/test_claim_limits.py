"""Nobody hoards the queue: one person holds at most `claims_per_reviewer` reviews at once, and
heartbeats keep a claim for `longest_claim_seconds` in all (SQLite and PostgreSQL, real broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from tandem_review_api.errors import Conflict
from tandem_review_api.queue import ClaimLimits, Review
from tandem_review_api.tables import reviews
from tandem_shared.auth import Principal
from tandem_shared.envelope import utcnow
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import review_api
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed

LIMITS = ClaimLimits(lease=timedelta(minutes=5), longest=timedelta(hours=1), per_reviewer=2)
ANA = Principal("ana", frozenset({"reviewer"}))


def held(claimed_at: timedelta, lease_left: timedelta) -> Review:
    """A review ana claimed ``claimed_at`` before NOW, its lease ending ``lease_left`` after."""
    return Review("r", "claimed", routed("t"), "ana", NOW + lease_left, claimed_at=NOW - claimed_at)


def test_a_heartbeat_extends_a_claim_up_to_its_longest_hold() -> None:
    minute = timedelta(minutes=1)
    assert LIMITS.lease_until(held(10 * minute, minute), ANA, NOW) == NOW + 5 * minute
    assert LIMITS.lease_until(held(57 * minute, minute), ANA, NOW) == NOW + 3 * minute
    with pytest.raises(Conflict, match="longest a claim may last"):
        LIMITS.lease_until(held(60 * minute, minute), ANA, NOW)


def test_someone_else_claiming_a_lapsed_review_begins_a_new_claim() -> None:
    lapsed = held(timedelta(hours=3), -timedelta(minutes=1))
    bob = Principal("bob", frozenset({"reviewer"}))
    assert LIMITS.lease_until(lapsed, bob, NOW) == NOW + timedelta(minutes=5)
    assert LIMITS.lease_until(lapsed, ANA, NOW) == NOW + timedelta(minutes=5)  # lapsed: anew


def test_the_claim_count_counts_new_claims_only() -> None:
    fresh = Review("r", "pending", routed("t"), None, None)
    LIMITS.check_count(fresh, ANA, 1, NOW)
    with pytest.raises(Conflict, match="you hold 2 reviews"):
        LIMITS.check_count(fresh, ANA, 2, NOW)
    LIMITS.check_count(held(timedelta(0), timedelta(minutes=1)), ANA, 2, NOW)  # already hers


@pytest.fixture
async def service(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async with review_api(kafka_settings, database_url, claims_per_reviewer=2) as service:
        yield service


@pytest.mark.kafka
async def test_a_reviewer_holds_two_reviews_at_most_and_a_claim_an_hour_at_most(
    service: tuple[httpx.AsyncClient, FastAPI], kafka_settings: KafkaSettings, topics: Topics
) -> None:
    client, app = service
    await publish_routed(kafka_settings, topics, [routed(f"hoard-{i}") for i in range(3)])
    first, second, third = await pending(client, 3)
    ana = auth("ana", "reviewer")
    for item in (first, second):
        claimed = await client.post(f"/v1/reviews/{item['review_id']}/claim", headers=ana)
        assert claimed.status_code == 200, claimed.text
    again = await client.post(f"/v1/reviews/{first['review_id']}/claim", headers=ana)
    assert again.status_code == 200  # claiming again what she holds takes nothing more
    for refused in (
        await client.post(f"/v1/reviews/{third['review_id']}/claim", headers=ana),
        await client.post("/v1/reviews/next", headers=ana),
    ):
        assert refused.status_code == 409
        assert "you hold 2 reviews" in refused.json()["detail"]
    released = await client.post(f"/v1/reviews/{second['review_id']}/release", headers=ana)
    assert released.status_code == 204
    assert (await client.post("/v1/reviews/next", headers=ana)).status_code == 200

    # Held since an hour ago (heartbeats and claims of her own do not move when it began).
    async with app.state.store.transaction() as s:
        await s.execute(
            update(reviews)
            .where(reviews.c.review_id == first["review_id"])
            .values(claimed_at=utcnow() - timedelta(hours=1))
        )
    for beat in (
        await client.post(f"/v1/reviews/{first['review_id']}/heartbeat", headers=ana),
        await client.post(f"/v1/reviews/{first['review_id']}/claim", headers=ana),
    ):
        assert beat.status_code == 409
        assert "longest a claim may last" in beat.json()["detail"]
    # Still hers to decide until its lease ends.
    decided = await client.post(
        f"/v1/reviews/{first['review_id']}/decision",
        json={"outcome": "benign", "rationale": "done"},
        headers=ana,
    )
    assert decided.status_code == 200, decided.text
