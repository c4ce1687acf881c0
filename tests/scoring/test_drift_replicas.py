"""Drift alarms with two scoring replicas and a restart, on the real broker: one replica's
recovery leaves the other's alarm standing, a restarted replica takes its alarm back and
repeats it, and the alarm ends when every replica's window says so (tandem_shared.drift_votes,
read as the router reads it)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import pytest
from tandem_cli import dataset
from tandem_scoring.app import create_app
from tandem_scoring.settings import ScoringSettings
from tandem_shared.control import read_control
from tandem_shared.drift_votes import DriftAlarms, DriftVote
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import submit_tasks
from tests.service_utils import OPEN_TRUST, running

pytestmark = pytest.mark.kafka
FEATURE = "mean_radius"


def replica(kafka: KafkaSettings, group: str, name: str) -> AbstractAsyncContextManager[Any]:
    """One scoring process named ``name`` (its pod's name), judging drift on windows of 200."""
    settings = ScoringSettings(
        kafka=kafka,
        group_id=group,
        runtime=RuntimeSettings(instance_id=name),
        batch_timeout_ms=50,
        drift_window=200,
        drift_min_count=200,
        drift_refresh_seconds=0.5,
    )
    return running(create_app(settings))


def tasks(count: int, shift: float) -> list[dict[str, Any]]:
    bodies = [body for body, _ in dataset.sample_tasks(count, seed=random.randrange(2**32))]
    for body in bodies:
        body["task_id"] = uuid.uuid4().hex
        body["features"][FEATURE] = float(body["features"][FEATURE]) + shift
    return bodies


async def votes(kafka: KafkaSettings, topics: Topics) -> dict[str, DriftVote]:
    """Each replica's latest vote on the feature, by replica."""
    changes = await read_control(kafka.bootstrap_servers, topics, OPEN_TRUST)
    found = [DriftVote.of(c) for c in changes.values()]
    return {v.replica: v for v in found if v is not None and v.feature == FEATURE}


async def alarmed(kafka: KafkaSettings, topics: Topics) -> bool:
    """Whether the router, reading the topic now, holds the feature in alarm."""
    alarms = DriftAlarms(ttl_s=600)
    for vote in (await votes(kafka, topics)).values():
        alarms.follow(vote)
    return ("tumor_screening", "1") in alarms.alarmed(time.time())


async def feed_until(
    kafka: KafkaSettings,
    topics: Topics,
    shift: float | None,
    said: dict[str, bool],
    after: datetime | None = None,
) -> None:
    """Submit 100 tasks (``shift`` added to the feature; None: no tasks) every half second,
    however the group shares its partitions at the time, until each replica in ``said`` votes
    as it says there (a vote cast after ``after``)."""

    def agreed(found: dict[str, DriftVote]) -> bool:
        return all(
            who in found
            and found[who].drifting is drifting
            and (after is None or found[who].at > after)
            for who, drifting in said.items()
        )

    for _ in range(120):
        if shift is not None:
            await submit_tasks(kafka.bootstrap_servers, topics.submitted, tasks(100, shift))
        await asyncio.sleep(0.5)
        if agreed(await votes(kafka, topics)):
            return
    raise AssertionError(f"the replicas never voted {said}: {await votes(kafka, topics)}")


async def test_an_alarm_holds_across_replicas_and_a_restart(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    group = f"scoring-{uuid.uuid4().hex[:8]}"
    far = 4 * 3.5  # four standard deviations of mean_radius: drift by any measure
    async with replica(kafka_settings, group, "scoring-b"):
        async with replica(kafka_settings, group, "scoring-a"):
            # Both replicas share the partitions and both see the shifted tasks.
            await feed_until(kafka_settings, topics, far, {"scoring-a": True, "scoring-b": True})
            assert await alarmed(kafka_settings, topics)
        stopped = datetime.now().astimezone()

        # scoring-a is down: scoring-b takes every partition, sees clean tasks, recovers.
        await feed_until(kafka_settings, topics, 0.0, {"scoring-b": False})
        assert await alarmed(kafka_settings, topics)  # scoring-a's alarm still stands

        # Restarted under its name, scoring-a takes its alarm back from the topic and says it
        # again, though its window is empty.
        async with replica(kafka_settings, group, "scoring-a"):
            await feed_until(kafka_settings, topics, None, {"scoring-a": True}, after=stopped)
            assert await alarmed(kafka_settings, topics)
            # Clean tasks for both: once scoring-a's own window is full of them, it is over.
            await feed_until(kafka_settings, topics, 0.0, {"scoring-a": False, "scoring-b": False})
            assert not await alarmed(kafka_settings, topics)
