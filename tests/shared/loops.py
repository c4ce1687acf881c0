"""Running the shared consumer loop in a test, on the real broker: tasks in, a relay out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from opentelemetry import trace
from prometheus_client import CollectorRegistry
from tandem_shared.envelope import Event
from tandem_shared.events import EventData, TaskSubmitted
from tandem_shared.kafka import BatchHandler, Incoming, Outgoing, Result, event_decoder
from tandem_shared.loop import ConsumerLoop, LoopConfig
from tandem_shared.settings import KafkaSettings
from tandem_shared.telemetry import PipelineMetrics
from tandem_shared.topics import Topics

Handler = BatchHandler[Event[EventData]]


def task(task_id: str, **extra: object) -> bytes:
    return json.dumps(
        {"task_id": task_id, "task_type": "t", "features": {"x": 1.0}, **extra}
    ).encode()


def relay_to(topic: str) -> Handler:
    """A handler that sends each task on to ``topic`` unchanged."""

    async def handler(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        return [
            [
                Outgoing(
                    topic,
                    Event.derived(
                        i.item.data, source="test", subject=i.item.subject, stage="relay"
                    ),
                )
            ]
            for i in batch
        ]

    return handler


@asynccontextmanager
async def looping(
    kafka_settings: KafkaSettings,
    topics: Topics,
    handler: Handler,
    group: str,
    loop_type: type[ConsumerLoop[Event[EventData]]] = ConsumerLoop,
    **config: object,
) -> AsyncIterator[tuple[ConsumerLoop[Event[EventData]], PipelineMetrics]]:
    """A loop of ``group`` on the submitted topic, running within; stopped at the end."""
    metrics = PipelineMetrics(CollectorRegistry(), "test")
    loop = loop_type(
        kafka_settings,
        group,
        [topics.submitted],
        event_decoder({"tandem.task.submitted.v1": TaskSubmitted}),
        handler,
        LoopConfig("test", topics.deadletter, backoff_s=0.01, **config),  # type: ignore[arg-type]
        metrics,
        trace.get_tracer("test"),
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(loop.run(stop))
    try:
        yield loop, metrics
    finally:
        stop.set()
        await runner


async def run_loop(
    kafka_settings: KafkaSettings,
    topics: Topics,
    handler: Handler,
    group: str,
    until: Callable[[], Awaitable[None]],
    slice_records: int = 100,
) -> PipelineMetrics:
    """Run a loop until ``until`` returns (a minute at most); its metrics."""
    async with looping(kafka_settings, topics, handler, group, slice_records=slice_records) as (
        _,
        metrics,
    ):
        await asyncio.wait_for(until(), timeout=60)
    return metrics
