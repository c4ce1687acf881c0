"""Plain aiokafka helpers for tests: what a producer or consumer outside Tandem would do."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from tandem_shared.clients import aiokafka_reader


def ce_headers(ce_type: str, subject: str, ce_id: str | None = None) -> list[tuple[str, bytes]]:
    """CloudEvents binary-mode headers, set by hand."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", (ce_id or str(uuid.uuid4())).encode()),
        ("ce_source", b"tests/producer"),
        ("ce_type", ce_type.encode()),
        ("ce_time", b"2026-11-25T10:00:00+00:00"),  # fixed, so tests can check it
        ("ce_subject", subject.encode()),
        ("content-type", b"application/json"),
    ]


async def produce(
    bootstrap: str, topic: str, records: Sequence[tuple[str | None, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key.encode() if key else None, headers=headers)
            for key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def traceparent_for(task_id: str) -> str:
    """The W3C trace context a traced producer would send; fixed per task id for checking."""
    digest = uuid.uuid5(uuid.NAMESPACE_OID, task_id).hex
    return f"00-{digest}-{digest[:16]}-01"


async def submit_tasks(bootstrap: str, topic: str, bodies: Sequence[dict[str, Any]]) -> None:
    """Publish tasks as a producer outside Tandem does: JSON value, headers set by hand."""
    await produce(
        bootstrap,
        topic,
        [
            (
                b["task_id"],
                json.dumps(b).encode(),
                [
                    *ce_headers("tandem.task.submitted.v1", b["task_id"]),
                    ("traceparent", traceparent_for(b["task_id"]).encode()),
                ],
            )
            for b in bodies
        ],
    )


class TopicReader:
    """Reads one topic from the beginning by assignment (no group to join), incrementally."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        # "earliest": a background reset racing the seek below must not skip to the end
        self.consumer = AIOKafkaConsumer(**aiokafka_reader(bootstrap))
        self.records: list[ConsumerRecord[bytes, bytes]] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        partitions = None
        for _ in range(100):
            partitions = self.consumer.partitions_for_topic(self.topic)
            if partitions:
                break
            await self.consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        assert partitions, f"topic {self.topic} has no partitions"
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_beginning(*assigned)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout: float = 0.5) -> list[ConsumerRecord[bytes, bytes]]:
        """Whatever arrived within ``timeout``; everything read so far stays in ``records``."""
        batches = await self.consumer.getmany(timeout_ms=int(timeout * 1000))
        new = [r for records in batches.values() for r in records]
        self.records.extend(new)
        return new

    async def settle(self, quiet: float = 1.0) -> list[ConsumerRecord[bytes, bytes]]:
        """Read until nothing new arrived for ``quiet`` seconds: all there is, to check that
        nothing more than expected was published."""
        while await self.poll(quiet):
            pass
        return self.records

    async def to_end(self, timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
        """Everything the topic holds now: read up to the end offsets it has at the call."""
        ends = await self.consumer.end_offsets(list(self.consumer.assignment()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = {tp: await self.consumer.position(tp) for tp in ends}
            if all(positions[tp] >= end for tp, end in ends.items()):
                break
            await self.poll(0.2)
        return self.records

    async def until(self, count: int, timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            await self.poll(0.2)
        return self.records


async def consume(
    bootstrap: str, topic: str, count: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read from the beginning until ``count`` records arrived or the time is up."""
    async with TopicReader(bootstrap, topic) as reader:
        return await reader.until(count, timeout)


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode()
    return None
