"""Object-level access: a reviewer lists, reads and follows only what they may act on (what
they may claim now, and their own claims); a senior escalations too; admins and auditors all.
The event stream applies the same filter, tells a console when a review leaves its view, and
ends when the token does (SQLite and PostgreSQL, real broker, a real HTTP server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from tandem_review_api.live import Subscribers
from tandem_shared.auth import mint_token
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import review_api
from tests.review_api.test_api import auth, publish_routed, queue_of, routed
from tests.review_api.test_live import Listener
from tests.service_utils import eventually

pytestmark = pytest.mark.kafka
ALICE, BOB, SAM = auth("alice", "reviewer"), auth("bob", "reviewer"), auth("sam", "senior")
ADMIN, AUDITOR = auth("ada", "admin"), auth("ivy", "auditor")


async def visible(client: httpx.AsyncClient, who: dict[str, str]) -> set[str]:
    items = (await client.get("/v1/reviews?limit=200", headers=who)).json()["items"]
    return {i["task_id"] for i in items}


async def test_each_role_sees_what_it_may_act_on(
    server: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    work = [routed("open-1"), routed("esc-1", escalate=True), routed("crit-1", critical=True)]
    await publish_routed(kafka_settings, topics, [*work, routed("done-1"), routed("bobs-1")])
    async with httpx.AsyncClient(base_url=server) as client:
        every = {i["task_id"]: i["review_id"] for i in await queue_of(client, "pending", ADMIN, 4)}
        ids = {
            **every,
            **{i["task_id"]: i["review_id"] for i in await queue_of(client, "escalated", ADMIN, 1)},
        }

        async def act(who: dict[str, str], task: str, action: str, **body: str) -> None:
            answer = await client.post(
                f"/v1/reviews/{ids[task]}/{action}", json=body or None, headers=who
            )
            assert answer.status_code in (200, 204), answer.text

        await act(ALICE, "done-1", "claim")
        await act(ALICE, "done-1", "decision", outcome="benign", rationale="seen")
        await act(BOB, "bobs-1", "claim")

        assert await visible(client, ALICE) == {"open-1", "crit-1"}
        assert await visible(client, BOB) == {"open-1", "crit-1", "bobs-1"}
        assert await visible(client, SAM) == {"open-1", "crit-1", "esc-1"}
        everything = {"open-1", "crit-1", "esc-1", "done-1", "bobs-1"}
        assert await visible(client, ADMIN) == everything
        assert await visible(client, AUDITOR) == everything

        # One review at a time: 404 for what is not yours to see, alike with one not there.
        for who, task, code in [
            (ALICE, "done-1", 404),  # decided
            (ALICE, "esc-1", 404),  # a senior's
            (ALICE, "bobs-1", 404),  # held by another
            (BOB, "bobs-1", 200),
            (SAM, "esc-1", 200),
            (AUDITOR, "done-1", 200),
        ]:
            read = await client.get(f"/v1/reviews/{ids[task]}", headers=who)
            assert read.status_code == code, (who, task, read.text)
        missing = await client.get("/v1/reviews/no-such-review", headers=ALICE)
        assert (missing.status_code, missing.json()["detail"]) == (
            404,
            "no review no-such-review for you",
        )

        # Approving a critical task takes it out of the approver's view until it is decided.
        await act(ALICE, "crit-1", "claim")
        await act(ALICE, "crit-1", "decision", outcome="benign", rationale="first look")
        assert await visible(client, ALICE) == {"open-1"}
        assert "crit-1" in await visible(client, BOB)


async def test_the_stream_shows_only_what_the_reader_may_see_and_says_when_it_goes(
    server: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    carol = Listener()
    async with carol.listening(server, auth("carol", "reviewer")):
        await publish_routed(
            kafka_settings, topics, [routed("s-open"), routed("s-esc", escalate=True)]
        )

        async def shown() -> bool:
            return carol.states("s-open") == ["pending"]

        await eventually(shown, "the open review on carol's stream", timeout=30)
        [review_id] = {e["review_id"] for _, kind, e in carol.events if kind == "review"}
        async with httpx.AsyncClient(base_url=server) as client:
            claimed = await client.post(f"/v1/reviews/{review_id}/claim", headers=BOB)
            assert claimed.status_code == 200

        async def gone() -> bool:
            return ("gone", {"review_id": review_id}) in [(k, e) for _, k, e in carol.events]

        await eventually(gone, "the review leaving carol's view once bob claimed it", timeout=30)
    kinds = [(kind, e.get("task_id")) for _, kind, e in carol.events]
    assert ("review", "s-esc") not in kinds  # escalated: never hers to see
    assert kinds.count(("review", "s-open")) == 1  # bob's claim was not shown to her


async def test_the_stream_ends_when_the_token_expires(server: str) -> None:
    brief = mint_token(RuntimeSettings(), "dan", ["reviewer"], timedelta(seconds=2))
    listener = Listener()
    async with listener.listening(server, {"Authorization": f"Bearer {brief}"}):

        async def ended() -> bool:
            return listener.ended

        await eventually(ended, "the stream to end with the token", timeout=30)
    assert [kind for _, kind, _ in listener.events] == ["expired"]


async def test_a_replica_serves_a_capped_number_of_streams(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    async with review_api(kafka_settings, database_url, events_max_subscribers=1) as (
        client,
        app,
    ):
        subscribers: Subscribers = app.state.subscribers

        async def one_stream() -> AsyncIterator[str]:
            yield ": connected\n\n"

        open_stream = subscribers.counted(one_stream())
        await anext(open_stream)  # a console is connected
        refused = await client.get("/v1/reviews/events", headers=ALICE)
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
        assert "too many live streams" in refused.json()["detail"]
        await open_stream.aclose()  # it went away
        assert subscribers.count == 0 and not subscribers.full
