"""The consumer loop off the happy path, on the real broker: poison records the broker would
refuse as they are, outputs too large to send, a dependency that stays down, a loop that dies."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

import pytest
from fastapi import FastAPI
from tandem_shared.envelope import Event
from tandem_shared.events import DeadLetter, EventData, TaskSubmitted
from tandem_shared.kafka import Incoming, Result, TransientError, event_decoder
from tandem_shared.service import ServiceRuntime
from tandem_shared.settings import KafkaSettings, ServiceSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import ce_headers, consume, produce
from tests.service_utils import committed, eventually, running
from tests.shared.loops import looping, relay_to, task

pytestmark = pytest.mark.kafka

SUBMITTED = {"tandem.task.submitted.v1": TaskSubmitted}


async def test_a_poison_record_near_the_size_limit_is_dead_lettered_cut_and_the_rest_flow_on(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    # No CloudEvents headers, and control bytes that JSON escapes to six characters each:
    # copied whole, its dead letter would be over 5 MB and refused by the broker.
    poison = b"\x01" * 900_000
    records = [("good-1", task("good-1"), ce_headers("tandem.task.submitted.v1", "good-1"))]
    records.append(("poison", poison, []))
    records.append(("good-2", task("good-2"), ce_headers("tandem.task.submitted.v1", "good-2")))
    await produce(kafka_settings.bootstrap_servers, topics.submitted, records)
    group = f"g-{uuid.uuid4().hex}"

    async def all_committed() -> bool:
        return await committed(kafka_settings, group, [topics.submitted]) == 3

    async with looping(kafka_settings, topics, relay_to(topics.scored), group):
        await eventually(all_committed, "every record committed")

    outputs = await consume(kafka_settings.bootstrap_servers, topics.scored, 2)
    assert sorted(r.key for r in outputs) == [b"good-1", b"good-2"]
    (raw,) = await consume(kafka_settings.bootstrap_servers, topics.deadletter, 1)
    assert raw.value is not None and len(raw.value) < 300_000
    letter = DeadLetter.model_validate_json(raw.value)
    assert letter.origin_key == "poison" and letter.payload_truncated
    assert letter.payload_size == len(poison)
    assert letter.payload_sha256 == hashlib.sha256(poison).hexdigest()
    assert "ce_specversion" in letter.error


async def test_a_record_whose_output_is_too_large_to_send_is_dead_lettered(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    big = task("big", context={"note": "x" * 20_000})
    records = [
        ("small", task("small"), ce_headers("tandem.task.submitted.v1", "small")),
        ("big", big, ce_headers("tandem.task.submitted.v1", "big")),
        ("after", task("after"), ce_headers("tandem.task.submitted.v1", "after")),
    ]
    await produce(kafka_settings.bootstrap_servers, topics.submitted, records)
    group = f"g-{uuid.uuid4().hex}"

    async def all_committed() -> bool:
        return await committed(kafka_settings, group, [topics.submitted]) == 3

    # The limit stands in for the broker's 1 MB: the relayed task is 20 KB.
    async with looping(
        kafka_settings, topics, relay_to(topics.scored), group, max_record_bytes=10_000
    ):
        await eventually(all_committed, "every record committed")

    outputs = await consume(kafka_settings.bootstrap_servers, topics.scored, 2)
    assert sorted(r.key for r in outputs) == [b"after", b"small"]
    (raw,) = await consume(kafka_settings.bootstrap_servers, topics.deadletter, 1)
    letter = DeadLetter.model_validate_json(raw.value or b"")
    assert letter.origin_key == "big"
    assert "over the limit of 10000" in letter.error


async def test_an_outage_is_retried_without_end_not_ready_with_its_lag_shown(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    ids = [f"t{i}" for i in range(5)]
    await produce(
        kafka_settings.bootstrap_servers,
        topics.submitted,
        [(i, task(i), ce_headers("tandem.task.submitted.v1", i)) for i in ids],
    )
    group = f"g-{uuid.uuid4().hex}"
    down = True
    attempts = 0
    relay = relay_to(topics.scored)

    async def handler(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        nonlocal attempts
        attempts += 1
        if down:
            raise TransientError("the database is down")
        return await relay(batch)  # type: ignore[no-any-return]

    async with looping(kafka_settings, topics, handler, group, max_backoff_s=0.05) as (
        loop,
        metrics,
    ):

        def lag() -> float:
            return sum(
                metrics.lag.labels("test", topics.submitted, str(p))._value.get()
                for p in range(kafka_settings.partitions)
            )

        async def stuck() -> bool:
            return attempts >= 20 and lag() == len(ids)

        await eventually(stuck, "the loop retrying with its lag shown")
        assert not loop.ready
        assert await committed(kafka_settings, group, [topics.submitted]) == 0
        assert metrics.committed.labels("test", topics.submitted)._value.get() == 0
        down = False

        async def caught_up() -> bool:
            return await committed(kafka_settings, group, [topics.submitted]) == len(ids)

        await eventually(caught_up, "the loop to catch up once the outage is over")
        assert loop.ready
        assert metrics.committed.labels("test", topics.submitted)._value.get() == len(ids)

    outputs = await consume(kafka_settings.bootstrap_servers, topics.scored, len(ids))
    assert sorted(r.key.decode() for r in outputs) == ids
    # Nothing was dead-lettered: an outage is never a reason to give up on a record.
    assert metrics.deadlettered.labels("test", topics.submitted)._value.get() == 0


async def test_a_service_whose_consumer_loop_died_fails_its_health_check(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    async def broken(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        return []  # one result per record is the contract: the loop cannot go on

    runtime = ServiceRuntime("test", ServiceSettings(kafka=kafka_settings))
    runtime.add_consumer(
        f"g-{uuid.uuid4().hex}", [topics.submitted], event_decoder(SUBMITTED), broken
    )
    app: FastAPI = runtime.app("test")
    async with running(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        await produce(
            kafka_settings.bootstrap_servers,
            topics.submitted,
            [("t1", task("t1"), ce_headers("tandem.task.submitted.v1", "t1"))],
        )

        async def unhealthy() -> bool:
            return (await client.get("/healthz")).status_code == 503

        await eventually(unhealthy, "/healthz to fail")
        assert (await client.get("/readyz")).status_code == 503
        metrics = (await client.get("/metrics")).text
        assert 'tandem_consumer_loop_running{group="g-' in metrics
        assert next(
            line
            for line in metrics.splitlines()
            if line.startswith("tandem_consumer_loop_running{")
        ).endswith(" 0.0")
