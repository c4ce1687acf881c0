"""Pipeline events as the services build them, and the audit sink running in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from tandem_shared.auth import mint_token
from tandem_shared.envelope import Event
from tandem_shared.events import (
    DecisionMade,
    EventData,
    FeedbackRecorded,
    ModelRef,
    PolicyRef,
    Score,
    TaskScored,
    TaskSubmitted,
)
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
MODEL = ModelRef(name="loan", version="1")
POLICY = PolicyRef(name="loan", version=3)
DECISION = "tandem.decision.made.v1"


def events(task_id: str) -> dict[str, Event[EventData]]:
    """One event of each pipeline stage for a task, built as the services build them."""
    task = TaskSubmitted(task_id=task_id, task_type="loan", features={"amount": 900.0})
    score = Score(model=MODEL, prediction="approve", probabilities={"approve": 0.9}, confidence=0.9)
    stages: dict[str, EventData] = {
        "submitted": task,
        "scored": TaskScored(task=task, score=score, submitted_at=NOW, scored_at=NOW),
        "decision": DecisionMade(
            task_id=task_id,
            task_type="loan",
            outcome="approve",
            decided_by="model",
            confidence=0.9,
            model=MODEL,
            policy=POLICY,
            submitted_at=NOW,
            decided_at=NOW,
        ),
        "feedback": FeedbackRecorded(
            task_id=task_id,
            task_type="loan",
            features={"amount": 900.0},
            model=MODEL,
            prediction="approve",
            probabilities={"approve": 0.9},
            confidence=0.9,
            label="approve",
            reviewer="bob",
            qa_sample=True,
            agreed=True,
            policy=POLICY,
            labelled_at=NOW,
        ),
    }
    return {
        stage: Event.derived(data, source=f"tests/{stage}", subject=task_id, stage=stage)
        for stage, data in stages.items()
    }


def record(event: Event[Any]) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    return (event.subject, event.value(), event.headers())


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def bearer(*roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(RuntimeSettings(), 'alice', list(roles))}"}


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The sink's lifespan, a client for its API, and readiness waited for."""
    transport = httpx.ASGITransport(app=app)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=30),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, "the sink to be ready")
        yield client


async def committed(kafka: KafkaSettings, group: str, topics: Topics) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group)
    await consumer.start()
    try:
        total = 0
        for topic in topics.all():
            for p in range(kafka.partitions):
                total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()
