"""The queue as reviewers work it: the next review by urgency, leases kept by heartbeats,
escalation with a reason, filters and cursors (SQLite and PostgreSQL, real broker)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import httpx
import pytest
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import consume
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed

pytestmark = pytest.mark.kafka


async def test_next_claims_by_priority_then_due_time_and_never_the_same_twice(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    soon = routed("soon").model_copy(update={"due_at": NOW + timedelta(hours=1)})
    urgent = routed("urgent", priority=90)
    later = routed("later")
    await publish_routed(kafka_settings, topics, [later, soon, urgent])
    await pending(api, 3)

    async def next_for(who: str) -> str:
        response = await api.post("/v1/reviews/next", headers=auth(who, "reviewer"))
        assert response.status_code == 200, response.text
        return str(response.json()["review_id"])

    # Three reviewers at once: each gets a different review, the most urgent ones first.
    claimed = await asyncio.gather(*(next_for(w) for w in ("ana", "ben", "cy")))
    assert len(set(claimed)) == 3
    items = (await api.get("/v1/reviews?status=claimed", headers=auth("ivy", "auditor"))).json()
    assert [i["task_id"] for i in items["items"]] == ["urgent", "soon", "later"]
    empty = await api.post("/v1/reviews/next", headers=auth("dee", "reviewer"))
    assert empty.status_code == 404


async def test_a_heartbeat_extends_the_lease_and_escalation_goes_to_seniors(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [routed("hard")])
    [item] = await pending(api, 1)
    review_id = item["review_id"]
    ana, ben = auth("ana", "reviewer"), auth("ben", "reviewer")
    first = (await api.post(f"/v1/reviews/{review_id}/claim", headers=ana)).json()
    assert (await api.post(f"/v1/reviews/{review_id}/heartbeat", headers=ben)).status_code == 409
    await asyncio.sleep(0.01)
    beat = (await api.post(f"/v1/reviews/{review_id}/heartbeat", headers=ana)).json()
    assert beat["lease_expires_at"] > first["lease_expires_at"]

    reason = {"reason": "the lesion looks unlike the training data"}
    assert (
        await api.post(f"/v1/reviews/{review_id}/escalate", json=reason, headers=ben)
    ).status_code == 409
    sent = await api.post(f"/v1/reviews/{review_id}/escalate", json=reason, headers=ana)
    assert sent.status_code == 204
    assert (await api.post("/v1/reviews/next", headers=ben)).status_code == 404
    senior = auth("sam", "senior")
    taken = await api.post("/v1/reviews/next", headers=senior)
    assert taken.json()["review_id"] == review_id
    shown = (await api.get(f"/v1/reviews/{review_id}", headers=senior)).json()
    assert shown["escalation_reason"] == f"ana: {reason['reason']}"


async def test_filters_and_cursor_pages_cover_the_queue_once(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    items = [routed(f"p-{n}", priority=40 + n) for n in range(7)]
    items.append(routed("due-early").model_copy(update={"due_at": NOW + timedelta(minutes=30)}))
    await publish_routed(kafka_settings, topics, items)
    await pending(api, 8)
    reader = auth("ana", "reviewer")
    urgent = (await api.get("/v1/reviews?priority_min=45", headers=reader)).json()
    assert [i["task_id"] for i in urgent["items"]] == ["due-early", "p-6", "p-5"]  # 50, 46, 45
    due = NOW + timedelta(hours=1)
    early = await api.get("/v1/reviews", params={"due_before": due.isoformat()}, headers=reader)
    assert [i["task_id"] for i in early.json()["items"]] == ["due-early"]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/reviews", params=params, headers=reader)).json()
        seen += [i["task_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["due-early", "p-6", "p-5", "p-4", "p-3", "p-2", "p-1", "p-0"]


async def test_the_second_approver_reviews_blind_to_the_first(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [routed("crit", critical=True)])
    [item] = await pending(api, 1)
    review_id = item["review_id"]
    ana, ben = auth("ana", "reviewer"), auth("ben", "reviewer")
    await api.post(f"/v1/reviews/{review_id}/claim", headers=ana)
    first = {"outcome": "malignant", "rationale": "ana-saw-an-irregular-border"}
    step = await api.post(f"/v1/reviews/{review_id}/decision", json=first, headers=ana)
    assert step.json()["status"] == "awaiting_approval"
    # Ana cannot approve twice, and the next review for her is none.
    assert (await api.post("/v1/reviews/next", headers=ana)).status_code == 404
    claimed = await api.post("/v1/reviews/next", headers=ben)
    assert claimed.json()["review_id"] == review_id
    shown = (await api.get(f"/v1/reviews/{review_id}", headers=ben)).json()
    listed = (await api.get("/v1/reviews?status=claimed", headers=ben)).json()["items"]
    for view in (shown, *listed):
        assert view["outcome"] is None and "approvals" not in view
        text = json.dumps(view)
        assert "ana-saw" not in text and '"ana"' not in text


async def test_twenty_concurrent_reviewers_never_share_or_lose_a_review(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    count = 40
    await publish_routed(kafka_settings, topics, [routed(f"c-{n:02d}") for n in range(count)])
    await pending(api, count)
    decided: list[tuple[str, str]] = []

    async def reviewer(name: str) -> None:
        who = auth(name, "reviewer")
        while True:
            claim = await api.post("/v1/reviews/next", headers=who)
            if claim.status_code == 404:
                return
            assert claim.status_code == 200, claim.text
            review_id = claim.json()["review_id"]
            body = {"outcome": "benign", "rationale": f"checked by {name}"}
            done = await api.post(f"/v1/reviews/{review_id}/decision", json=body, headers=who)
            assert done.status_code == 200, done.text
            decided.append((review_id, name))

    await asyncio.gather(*(reviewer(f"r{n:02d}") for n in range(20)))
    ids = [review_id for review_id, _ in decided]
    assert len(ids) == len(set(ids)) == count  # each decided once, none lost
    assert len({name for _, name in decided}) > 1  # the work was shared
    records = await consume(
        kafka_settings.bootstrap_servers, topics.decisions, count + 1, timeout=5
    )
    assert sorted(r.key for r in records) == sorted(f"c-{n:02d}".encode() for n in range(count))
