"""Reading back a time window of the pipeline from Kafka: the scored events it routed, and the
outcomes people gave them, for a what-if of a proposed policy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from tandem_shared.control import assign_all
from tandem_shared.envelope import EnvelopeError, decode
from tandem_shared.events import DecisionMade, FeedbackRecorded, TaskScored
from tandem_shared.topics import Topics

READ_TIMEOUT_S = 120.0


async def scored_between(
    bootstrap_servers: str, topics: Topics, since: datetime, until: datetime
) -> list[TaskScored]:
    """The scored events appended to the topic in [since, until), in partition order."""
    out: list[TaskScored] = []

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        event = decode(record.value, record.headers, {"tandem.task.scored.v1": TaskScored})
        if isinstance(event.data, TaskScored):
            out.append(event.data)

    await _read(bootstrap_servers, topics.scored, since, until, keep)
    return out


async def human_outcomes(bootstrap_servers: str, topics: Topics, since: datetime) -> dict[str, str]:
    """Task id → the outcome people gave, from records appended since ``since`` (a review ends
    after its task was scored, so the window runs to the end of the topics): the human decision
    where there is one, else a reviewer's label on the feedback topic (QA samples of automatic
    decisions have only that)."""
    decided: dict[str, str] = {}
    labelled: dict[str, str] = {}

    def keep_decision(record: ConsumerRecord[bytes, bytes]) -> None:
        event = decode(record.value, record.headers, {"tandem.decision.made.v1": DecisionMade})
        data = event.data
        if isinstance(data, DecisionMade) and data.decided_by == "human":
            decided[data.task_id] = data.outcome

    def keep_label(record: ConsumerRecord[bytes, bytes]) -> None:
        event = decode(
            record.value, record.headers, {"tandem.feedback.recorded.v1": FeedbackRecorded}
        )
        if isinstance(event.data, FeedbackRecorded):
            labelled[event.data.task_id] = event.data.label

    await _read(bootstrap_servers, topics.decisions, since, None, keep_decision)
    await _read(bootstrap_servers, topics.feedback, since, None, keep_label)
    return {**labelled, **decided}


async def _read(
    bootstrap_servers: str,
    topic: str,
    since: datetime,
    until: datetime | None,
    keep: Callable[[ConsumerRecord[bytes, bytes]], None],
) -> None:
    """Every record of ``topic`` from ``since`` to ``until`` (or the end as it is now); records
    that are not valid events are skipped, as the consumers dead-lettered them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            partitions = await assign_all(consumer, topic)
            end = await consumer.end_offsets(partitions)
            start = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in partitions}
            )
            limit_ms = int(until.timestamp() * 1000) if until is not None else None
            remaining: set[TopicPartition] = set()
            for tp in partitions:
                found = start[tp]
                if found is not None and found.offset < end[tp]:
                    consumer.seek(tp, found.offset)
                    remaining.add(tp)
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        if limit_ms is not None and record.timestamp >= limit_ms:
                            remaining.discard(tp)
                            break
                        try:
                            keep(record)
                        except EnvelopeError:
                            continue
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
