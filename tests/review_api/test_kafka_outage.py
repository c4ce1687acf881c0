"""A Kafka outage, on a broker of the test's own: the review API keeps serving reviewers and
producers while its outbox fills, and once the broker is back every event it accepted arrives
on its topic exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tandem_cli.stack.kafka import KafkaBroker
from tandem_cli.stack.process import free_port
from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_shared.envelope import event_id, utcnow
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics, ensure_topics

from tests.kafka_utils import TopicReader, header
from tests.review_api.test_api import auth, pending, publish_routed, routed
from tests.service_utils import eventually, running

pytestmark = pytest.mark.kafka
TASKS = 50
REVIEWS = 5


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[KafkaBroker]:
    """A broker only this test stops and starts again (same port, same data)."""
    broker = KafkaBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    await asyncio.to_thread(broker.start)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)


def task(n: int) -> dict[str, Any]:
    return {"task_id": f"h-{n:02d}", "task_type": "tumor_screening", "features": {"r": 1.0}}


async def exactly(kafka: KafkaSettings, topic: str, ids: set[str]) -> None:
    """``topic`` holds one record for each event id, and nothing else."""
    async with TopicReader(kafka.bootstrap_servers, topic) as reader:
        await reader.until(len(ids), timeout=60)
        await reader.poll(1.0)  # a duplicate sent after the others would show up here
    found = [header(r, "ce_id") for r in reader.records]
    assert sorted(found) == sorted(ids), topic


async def test_a_kafka_outage_delays_what_the_api_accepted_and_loses_none(
    broker: KafkaBroker, database_url: str
) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix="outage.", partitions=3
    )
    topics = Topics(kafka.topic_prefix)
    await ensure_topics(kafka.bootstrap_servers, topics, partitions=kafka.partitions)
    settings = ReviewApiSettings(
        kafka=kafka, database_url=database_url, batch_timeout_ms=50, overdue_check_seconds=3600
    )
    app = create_app(settings)
    async with running(app) as client:
        await publish_routed(kafka, topics, [routed(f"r-{n}") for n in range(REVIEWS)])
        alice, producer = auth("alice", "reviewer"), auth("producer", "service")
        reviews = await pending(client, REVIEWS)
        for review in reviews:
            claim = await client.post(f"/v1/reviews/{review['review_id']}/claim", headers=alice)
            assert claim.status_code == 200, claim.text

        await asyncio.to_thread(broker.stop)
        # Publishing on the request path, each of these waited out Kafka's 40 s and failed.
        async with asyncio.timeout(30):
            accepted = [
                await client.post("/v1/tasks", json=task(n), headers=producer) for n in range(TASKS)
            ]
            decided = [
                await client.post(
                    f"/v1/reviews/{review['review_id']}/decision",
                    json={"outcome": "malignant", "rationale": "irregular margins"},
                    headers=alice,
                )
                for review in reviews
            ]
            again = await client.post("/v1/tasks", json=task(0), headers=producer)
        assert [r.status_code for r in accepted] == [202] * TASKS
        assert {r.json()["status"] for r in accepted} == {"accepted"}
        assert [r.status_code for r in decided] == [200] * REVIEWS
        assert (again.status_code, again.json()["status"]) == (200, "already_submitted")
        waiting = await app.state.outbox.backlog(utcnow())
        assert waiting.depth == TASKS + 2 * REVIEWS  # each decision and its feedback
        # Still ready, with its consumer loop waiting for the broker: it stays in its Service.
        await asyncio.sleep(3)  # past the loop's look at the broker (every 2 s)
        assert (await client.get("/readyz")).status_code == 200

        await asyncio.to_thread(broker.start)
        await exactly(
            kafka,
            topics.submitted,
            {event_id(task(n)["task_id"], "submitted") for n in range(TASKS)},
        )
        await exactly(
            kafka, topics.decisions, {event_id(f"r-{n}", "decision") for n in range(REVIEWS)}
        )
        await exactly(
            kafka, topics.feedback, {event_id(f"r-{n}", "feedback/alice") for n in range(REVIEWS)}
        )

        async def emptied() -> bool:
            return (await app.state.outbox.backlog(utcnow())).depth == 0

        await eventually(emptied, "the outbox to empty", timeout=10)
        metrics = (await client.get("/metrics")).text
        assert f"tandem_outbox_published_total {float(TASKS + 2 * REVIEWS)}" in metrics
