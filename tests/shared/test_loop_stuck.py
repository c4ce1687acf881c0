"""A call into librdkafka that never returns (librdkafka can wait for a group coordinator for
ever after a broker restart, whatever the timeout it was given) ends the consumer loop, so the
service fails its health check and is restarted, instead of stalling while it looks healthy."""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from tandem_shared.kafka import event_decoder
from tandem_shared.loop import ConsumerLoop, LoopConfig, Stuck
from tandem_shared.settings import KafkaSettings
from tandem_shared.telemetry import PipelineMetrics


async def nothing(batch: object) -> list[object]:
    return []


def a_loop(stuck_after_s: float) -> ConsumerLoop[object]:
    return ConsumerLoop(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        "test-stuck",
        ["t.tasks.submitted"],
        event_decoder({}),
        nothing,  # type: ignore[arg-type]
        LoopConfig("test", "t.deadletter", stuck_after_s=stuck_after_s),
        PipelineMetrics(CollectorRegistry(), "test"),
        trace.get_tracer("test"),
    )


async def test_a_transactional_call_blocked_past_the_bound_raises_stuck() -> None:
    loop = a_loop(stuck_after_s=0.3)
    loop.ready = True
    started = time.monotonic()
    with pytest.raises(Stuck):
        await loop._call(loop._timed(lambda: time.sleep(2.0)))
    assert time.monotonic() - started < 1.5
    assert not loop.ready


async def test_slow_calls_that_return_and_untimed_calls_are_left_alone() -> None:
    loop = a_loop(stuck_after_s=0.3)
    assert await loop._call(lambda: 7) == 7
    await loop._call(loop._timed(lambda: time.sleep(0.1)))
    await loop._call(time.sleep, 0.6)  # a poll waiting for records is not a transaction
    loop._thread.shutdown(wait=True)


async def test_the_loop_ends_without_waiting_for_the_blocked_thread() -> None:
    loop = a_loop(stuck_after_s=0.3)
    loop._open = loop._timed(lambda: time.sleep(3.0))  # type: ignore[method-assign]
    started = time.monotonic()
    with pytest.raises(Stuck):
        await asyncio.wait_for(loop.run(asyncio.Event()), timeout=2.5)
    assert time.monotonic() - started < 2.0
