"""The control topic: compacted, one key per controlled thing (``model/NAME``, ``policy/NAME``);
the latest record of a key is its desired state. Services read it whole at start, then follow it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field

from tandem_shared.envelope import EnvelopeError, Event, decode, utcnow
from tandem_shared.events import ControlChanged, EventData
from tandem_shared.kafka import Outgoing, Publisher
from tandem_shared.topics import Topics

READ_TIMEOUT_S = 30.0
CONTROL_TYPES: Mapping[str, type[EventData]] = {"tandem.control.changed.v1": ControlChanged}


def model_key(name: str) -> str:
    return f"model/{name}"


class ModelState(BaseModel):
    """Which version of a model scores (live), which scores beside it (shadow), and the one
    before (the target of a rollback)."""

    model_config = ConfigDict(frozen=True)

    live: str = Field(min_length=1)
    previous: str | None = None
    shadow: str | None = None


def model_change(name: str, state: ModelState, changed_by: str) -> Event[ControlChanged]:
    data = ControlChanged(
        kind="model",
        name=name,
        value=state.model_dump(),
        changed_by=changed_by,
        changed_at=utcnow(),
    )
    # Each change is its own event: ids are unique, the key (subject) is what compaction keeps.
    return Event(str(uuid.uuid4()), "tandem/control", model_key(name), data, data.changed_at)


async def publish_change(publisher: Publisher, topics: Topics, event: Event[Any]) -> None:
    await publisher.publish([Outgoing(topics.control, event)])


async def read_control(bootstrap_servers: str, topics: Topics) -> dict[str, ControlChanged]:
    """The latest valid control record of every key, read to the end of the topic as it is now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    latest: dict[str, ControlChanged] = {}
    try:
        partitions = await _partitions(consumer, topics.control)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        async with asyncio.timeout(READ_TIMEOUT_S):
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        try:
                            event = decode(record.value, record.headers, CONTROL_TYPES)
                        except EnvelopeError:
                            continue  # not a control change: nothing to follow
                        if isinstance(event.data, ControlChanged):
                            latest[event.subject] = event.data
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return latest


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    async with asyncio.timeout(READ_TIMEOUT_S):
        while not (found := consumer.partitions_for_topic(topic)):
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
    partitions = [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(partitions)
    return partitions


def model_state(changes: Mapping[str, ControlChanged], name: str) -> ModelState | None:
    """The state the control topic holds for a model, if any."""
    change = changes.get(model_key(name))
    if change is None or change.kind != "model":
        return None
    return ModelState.model_validate(change.value)


def promoted(current: ModelState | None, version: str) -> ModelState:
    """``version`` goes live; the one it replaces becomes the target of a rollback."""
    if current is None:
        return ModelState(live=version)
    previous = current.live if current.live != version else current.previous
    shadow = current.shadow if current.shadow != version else None
    return ModelState(live=version, previous=previous, shadow=shadow)


def rolled_back(current: ModelState | None) -> ModelState:
    """Back to the previous version; rolling back again returns to this one."""
    if current is None or current.previous is None:
        raise ValueError("no previous version is known to roll back to")
    return ModelState(live=current.previous, previous=current.live, shadow=current.shadow)


def shadowed(current: ModelState | None, version: str | None) -> ModelState:
    """``version`` scores beside the live one (None: no shadow); the live version is unchanged."""
    if current is None:
        raise ValueError("no live version is recorded yet: promote one first")
    if version is not None and version == current.live:
        raise ValueError(f"version {version} is already live")
    return current.model_copy(update={"shadow": version})
