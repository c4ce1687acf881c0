"""Working off a backlog, one transaction takes several batches; on the real broker, every
output is still there once, whether the transaction commits on its interval, when the loop
catches up, in a rebalance, or when the loop stops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

import pytest
from tandem_shared import loop as consumer_loop
from tandem_shared.envelope import Event
from tandem_shared.events import EventData
from tandem_shared.kafka import Incoming, Result
from tandem_shared.loop import ConsumerLoop
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import TopicReader, ce_headers, produce
from tests.service_utils import committed, eventually
from tests.shared.loops import looping, relay_to, task

pytestmark = pytest.mark.kafka

# Small batches, always full while behind, and an interval so long that only a short batch, a
# rebalance or the loop's stop commits.
BEHIND: dict[str, object] = {"max_records": 5, "commit_interval_ms": 60_000}


async def backlog(kafka: KafkaSettings, topics: Topics, count: int) -> list[str]:
    ids = [f"t{i:03d}" for i in range(count)]
    await produce(
        kafka.bootstrap_servers,
        topics.submitted,
        [(i, task(i), ce_headers("tandem.task.submitted.v1", i)) for i in ids],
    )
    return ids


class SlowRelay:
    """Relays each batch after a pause, so a backlog lasts; counts the batches and records."""

    def __init__(self, topics: Topics, pause_s: float) -> None:
        self.relay = relay_to(topics.scored)
        self.pause_s = pause_s
        self.batches = 0
        self.handled = 0

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        self.batches += 1
        self.handled += len(batch)
        await asyncio.sleep(self.pause_s)
        return await self.relay(batch)  # type: ignore[no-any-return]

    def past(self, count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return self.handled >= count

        return check


def all_committed(
    kafka: KafkaSettings, group: str, topics: Topics, count: int
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await committed(kafka, group, [topics.submitted]) == count

    return check


async def outputs(kafka: KafkaSettings, topics: Topics) -> list[str]:
    """Every relayed task id on the output topic, committed records only, duplicates kept."""
    async with TopicReader(kafka.bootstrap_servers, topics.scored) as reader:
        return sorted(r.key.decode() for r in await reader.settle() if r.key)


async def test_a_backlog_commits_several_batches_a_transaction(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    ids = await backlog(kafka_settings, topics, 120)
    group = f"g-{uuid.uuid4().hex}"
    relay = SlowRelay(topics, 0)
    done = all_committed(kafka_settings, group, topics, len(ids))
    async with looping(
        kafka_settings, topics, relay, group, max_records=10, commit_interval_ms=60_000
    ) as (_, metrics):
        await eventually(done, "the backlog committed")
        transactions = metrics.transactions.labels("test", "committed")._value.get()
        assert metrics.committed.labels("test", topics.submitted)._value.get() == len(ids)

    # A transaction ends when a batch comes short of max_records (the loop caught up) or on
    # the interval (a minute here): far fewer transactions than batches.
    assert 1 <= transactions < relay.batches / 2
    assert await outputs(kafka_settings, topics) == ids


async def test_an_open_transaction_commits_before_a_rebalance_moves_its_partitions(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    ids = await backlog(kafka_settings, topics, 400)
    group = f"g-{uuid.uuid4().hex}"
    slow = SlowRelay(topics, 0.08)  # the backlog lasts (6 s) while the second member joins

    async with looping(kafka_settings, topics, slow, group, **BEHIND) as _:
        await eventually(slow.past(30), "the first member working off the backlog")
        async with looping(kafka_settings, topics, slow, group, **BEHIND) as (second, _):

            async def shared() -> bool:
                consumer = second._consumer  # None until the loop has opened its clients
                return consumer is not None and bool(await second._call(consumer.assignment))

            await eventually(shared, "the second member assigned partitions")
            done = all_committed(kafka_settings, group, topics, len(ids))
            await eventually(done, "the backlog committed by the two members", 120)

    assert await outputs(kafka_settings, topics) == ids


async def test_a_stopped_loop_commits_the_batches_it_sent(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    ids = await backlog(kafka_settings, topics, 200)
    group = f"g-{uuid.uuid4().hex}"
    slow = SlowRelay(topics, 0.02)
    async with looping(kafka_settings, topics, slow, group, **BEHIND) as (_, metrics):
        await eventually(slow.past(40), "the loop working off the backlog")
    stopped_at = await committed(kafka_settings, group, [topics.submitted])
    # Nothing committed on the interval (a minute): what is committed, the stop committed.
    assert stopped_at >= 40
    assert metrics.committed.labels("test", topics.submitted)._value.get() == stopped_at

    done = all_committed(kafka_settings, group, topics, len(ids))
    async with looping(kafka_settings, topics, relay_to(topics.scored), group):
        await eventually(done, "the next member to commit the rest")
    assert await outputs(kafka_settings, topics) == ids


class CommitAbortedOnce(ConsumerLoop[Event[EventData]]):
    """The second transaction committed on the client thread (while the loop handles the
    batch fetched after it) is aborted on the broker instead, as a coordinator that moved or
    timed it out would have it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.commits = 0

    def _commit_given(self, txn: consumer_loop._Transaction) -> None:
        self.commits += 1
        if self.commits != 2:
            super()._commit_given(txn)
            return
        assert self._producer is not None
        self._producer.abort_transaction(30)
        self._lost = (self._lost or []) + txn.records()


async def test_a_commit_aborted_while_the_next_batch_is_handled_brings_both_back_once(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    ids = await backlog(kafka_settings, topics, 120)
    group = f"g-{uuid.uuid4().hex}"
    relay = SlowRelay(topics, 0)
    done = all_committed(kafka_settings, group, topics, len(ids))
    # Full batches and no interval: each batch's transaction commits while the next is handled.
    async with looping(
        kafka_settings,
        topics,
        relay,
        group,
        loop_type=CommitAbortedOnce,
        max_records=10,
        commit_interval_ms=0,
    ) as (loop, metrics):
        await eventually(done, "the backlog committed")
        assert metrics.transactions.labels("test", "aborted")._value.get() == 1
        assert metrics.committed.labels("test", topics.submitted)._value.get() == len(ids)
    assert isinstance(loop, CommitAbortedOnce) and loop.commits > 2
    # The aborted transaction's batch, and the one handled meanwhile, were handled again.
    assert relay.handled > len(ids)
    assert await outputs(kafka_settings, topics) == ids
