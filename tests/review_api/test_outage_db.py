"""A PostgreSQL restart while the review API materialises the queue: its batches wait for the
database, nothing routed or decided is dead-lettered, and every review ends up in the queue."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_review_api.tables import reviews, tasks
from tandem_shared.db import create_engine
from tandem_shared.envelope import Event
from tandem_shared.events import DecisionMade, ModelRef, PolicyRef
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.audit_sink.outage import outage, postgres_of_its_own
from tests.kafka_utils import TopicReader
from tests.review_api.test_api import NOW, auth, publish_routed, routed
from tests.service_utils import committed, eventually, failures, publish_events, running

pytestmark = pytest.mark.kafka
BEFORE, DURING = 200, 40  # a backlog, so the outage may well strike inside a batch


def decided_by_model(topics: Topics, task_id: str) -> Outgoing:
    decision = DecisionMade(
        task_id=task_id,
        task_type="tumor_screening",
        outcome="benign",
        decided_by="model",
        confidence=0.97,
        model=ModelRef(name="tumor_screening", version="1"),
        policy=PolicyRef(name="default", version=1),
        submitted_at=NOW,
        decided_at=NOW,
    )
    event = Event.derived(decision, source="tandem/router", subject=task_id, stage="decision")
    return Outgoing(topics.decisions, event)


async def test_a_postgres_restart_holds_the_queue_back_and_dead_letters_nothing(
    kafka_settings: KafkaSettings, topics: Topics, work_dir: Path
) -> None:
    with postgres_of_its_own(work_dir) as server:
        url = await asyncio.to_thread(server.create_database, "review")
        settings = ReviewApiSettings(
            kafka=kafka_settings,
            database_url=url,
            group_id=f"review-{uuid.uuid4().hex}",
            batch_timeout_ms=50,
            retry_backoff_s=0.05,
            overdue_check_seconds=3600,
        )
        app = create_app(settings)
        consumed = [topics.routed, topics.decisions]
        total = BEFORE + DURING + DURING  # routed before and during, decisions during

        async def progress() -> int:
            return await committed(kafka_settings, settings.group_id, consumed)

        async with running(app) as client:
            await publish_routed(
                kafka_settings, topics, [routed(f"before-{n}") for n in range(BEFORE)]
            )

            async def started() -> bool:
                return await progress() > 0

            await eventually(started, "the first batch of the backlog committed")
            async with outage(server, seconds=4):
                await publish_routed(
                    kafka_settings, topics, [routed(f"during-{n}") for n in range(DURING)]
                )
                await publish_events(
                    kafka_settings, [decided_by_model(topics, f"auto-{n}") for n in range(DURING)]
                )

                async def held_back() -> bool:
                    return (await client.get("/readyz")).status_code != 200

                await eventually(held_back, "the consumer to find the database down", timeout=20)
                assert await progress() < total
                # A front-end asking meanwhile is told to try again, not given a server error.
                listed = await client.get("/v1/reviews", headers=auth("ana", "reviewer"))
                assert listed.status_code == 503, listed.text
                assert "database" in listed.json()["detail"]

            async def caught_up() -> bool:
                return await progress() == total

            await eventually(caught_up, "every record materialised and committed")
            assert failures((await client.get("/metrics")).text) == []
            assert (await client.get("/readyz")).status_code == 200  # the pool came back

        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                queued = await conn.scalar(select(func.count()).select_from(reviews))
                decided = await conn.scalar(
                    select(func.count()).select_from(tasks).where(tasks.c.status == "decided")
                )
        finally:
            await engine.dispose()
        assert (queued, decided) == (BEFORE + DURING, DURING)

    async with TopicReader(kafka_settings.bootstrap_servers, topics.deadletter) as letters:
        assert await letters.poll(1.0) == []
