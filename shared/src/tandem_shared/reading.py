"""Reading a topic back, without a consumer group: from the start or a time, to a time or to
the end as it is when the read begins. For start-up state, what-ifs and exports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tandem_shared.clients import aiokafka_reader
from tandem_shared.envelope import EnvelopeError, Event, decode
from tandem_shared.events import EventData

READ_TIMEOUT_S = 120.0


async def read_events(
    bootstrap_servers: str,
    topic: str,
    accepted: Mapping[str, type[EventData]],
    keep: Callable[[Event[EventData]], None],
    since: datetime | None = None,
    until: datetime | None = None,
    timeout_s: float = READ_TIMEOUT_S,
) -> None:
    """Every valid event of ``topic`` appended in [since, until) (the whole topic by default),
    in partition order; a record that is not a valid event of an accepted type is skipped, as
    the consumers dead-lettered it."""

    def event(record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            keep(decode(record.value, record.headers, accepted))
        except EnvelopeError:
            return

    await read_records(bootstrap_servers, topic, event, since, until, timeout_s)


async def read_records(
    bootstrap_servers: str,
    topic: str,
    keep: Callable[[ConsumerRecord[bytes, bytes]], None],
    since: datetime | None = None,
    until: datetime | None = None,
    timeout_s: float = READ_TIMEOUT_S,
) -> None:
    # Assigning starts a reset to auto_offset_reset in the background, which can land after
    # the seek below: with "earliest" a late reset only rereads what the start skips anyway.
    consumer = AIOKafkaConsumer(**aiokafka_reader(bootstrap_servers))
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            partitions = await assign_all(consumer, topic)
            end = await consumer.end_offsets(partitions)
            start = await _start(consumer, partitions, end, since)
            remaining = set(start)
            limit_ms = int(until.timestamp() * 1000) if until is not None else None
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        if limit_ms is not None and record.timestamp >= limit_ms:
                            remaining.discard(tp)
                            break
                        if start[tp] <= record.offset < end[tp]:
                            keep(record)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()


async def _start(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    end: Mapping[TopicPartition, int],
    since: datetime | None,
) -> dict[TopicPartition, int]:
    """Seek each partition with something to read to where the read begins; those offsets."""
    if since is None:
        await consumer.seek_to_beginning(*partitions)
        return {tp: 0 for tp in partitions if end[tp] > 0}
    found = await consumer.offsets_for_times(
        {tp: int(since.timestamp() * 1000) for tp in partitions}
    )
    start = {}
    for tp in partitions:
        at = found[tp]
        if at is not None and at.offset < end[tp]:
            consumer.seek(tp, at.offset)
            start[tp] = at.offset
    return start


async def assign_all(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of ``topic`` (waiting for its metadata) and return them."""
    while not (found := consumer.partitions_for_topic(topic)):
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    partitions = [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(partitions)
    return partitions
