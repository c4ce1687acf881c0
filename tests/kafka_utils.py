"""Plain aiokafka helpers for tests: what a producer or consumer outside Tandem would do."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord


def ce_headers(ce_type: str, subject: str, ce_id: str | None = None) -> list[tuple[str, bytes]]:
    """CloudEvents binary-mode headers, set by hand."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", (ce_id or str(uuid.uuid4())).encode()),
        ("ce_source", b"tests/producer"),
        ("ce_type", ce_type.encode()),
        ("ce_time", b"2026-11-25T10:00:00+00:00"),
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


async def submit_tasks(bootstrap: str, topic: str, bodies: Sequence[dict[str, Any]]) -> None:
    await produce(
        bootstrap,
        topic,
        [
            (
                b["task_id"],
                json.dumps(b).encode(),
                ce_headers("tandem.task.submitted.v1", b["task_id"]),
            )
            for b in bodies
        ],
    )


async def consume(
    bootstrap: str, topic: str, count: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read from the beginning until ``count`` records arrived or the time is up."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex}",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode()
    return None
