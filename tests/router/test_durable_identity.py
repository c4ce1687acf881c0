"""A task id routes once across router restarts, rebalances and scaling, on the real broker:
the routed ids are a changelog written in each batch's transaction and read back on assignment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tandem_router.app import create_app
from tandem_router.settings import RouterSettings
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import TopicReader, produce
from tests.policy.factories import POLICY_YAML, scored
from tests.router.test_service import record
from tests.service_utils import committed, eventually, running

pytestmark = pytest.mark.kafka

GROUP = "tandem-router"


def settings_for(kafka: KafkaSettings, tmp_path: Path) -> RouterSettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    return RouterSettings(
        kafka=kafka, policy_file=policy, batch_timeout_ms=50, retry_backoff_s=0.05
    )


async def outputs(kafka: KafkaSettings, topics: Topics) -> list[str]:
    """The task ids of every decision and review request published, once per output."""
    ids = []
    for topic in (topics.decisions, topics.routed):
        async with TopicReader(kafka.bootstrap_servers, topic) as reader:
            await reader.settle()
            ids += [r.key.decode() for r in reader.records if r.key is not None]
    return ids


async def test_a_task_submitted_again_after_a_restart_is_not_routed_again(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    settings = settings_for(kafka_settings, tmp_path)
    first = [record(scored(f"t{n}", confidence=0.99)) for n in range(20)]
    async with running(create_app(settings)):
        await produce(kafka_settings.bootstrap_servers, topics.scored, first)

        async def routed() -> bool:
            return await committed(kafka_settings, GROUP, [topics.scored]) >= len(first)

        await eventually(routed, "the first submissions routed")

    # A new process: nothing in memory. The same ids again, scored differently this time
    # (a low confidence would send them to people), and one new task.
    again = [record(scored(f"t{n}", confidence=0.5)) for n in range(20)]
    again.append(record(scored("new", confidence=0.99)))
    async with running(create_app(settings)) as router:
        await produce(kafka_settings.bootstrap_servers, topics.scored, again)

        async def caught_up() -> bool:
            done = await committed(kafka_settings, GROUP, [topics.scored])
            return done >= len(first) + len(again)

        await eventually(caught_up, "the resubmissions handled")
        metrics = (await router.get("/metrics")).text

    ids = await outputs(kafka_settings, topics)
    assert sorted(ids) == sorted([f"t{n}" for n in range(20)] + ["new"])
    duplicates = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tandem_router_duplicates_total{")
    )
    assert duplicates == 20


async def test_task_ids_follow_their_partitions_through_rebalances_and_scaling(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    settings = settings_for(kafka_settings, tmp_path)
    tasks = [f"s{n}" for n in range(60)]
    bootstrap = kafka_settings.bootstrap_servers

    async def handled(count: int) -> bool:
        return await committed(kafka_settings, GROUP, [topics.scored]) >= count

    async with running(create_app(settings)):
        await produce(
            bootstrap, topics.scored, [record(scored(t, confidence=0.99)) for t in tasks[:30]]
        )
        await eventually(lambda: handled(30), "the first half routed")
        # A second replica joins: the partitions are shared out between the two.
        async with running(create_app(settings)):
            await asyncio.sleep(1)
            await produce(
                bootstrap,
                topics.scored,
                [record(scored(t, confidence=0.99)) for t in tasks]  # the first half again
                + [record(scored(t, confidence=0.5)) for t in tasks[:30]],  # and once more
            )
            await eventually(lambda: handled(120), "everything handled by two replicas")
        # Back to one replica, which takes every partition again.
        await produce(bootstrap, topics.scored, [record(scored(t, confidence=0.3)) for t in tasks])
        await eventually(lambda: handled(180), "everything handled after scaling in")

    ids = await outputs(kafka_settings, topics)
    assert sorted(ids) == sorted(tasks)  # each task routed exactly once
