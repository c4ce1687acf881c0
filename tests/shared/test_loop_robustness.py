"""The consumer loop off the happy path, on the real broker: poison records the broker would
refuse as they are, outputs too large to send, a dependency that stays down, a loop that dies."""

from __future__ import annotations

import hashlib
import logging
import time
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

from tests.kafka_utils import TopicReader, ce_headers, consume, produce
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


async def test_a_batch_handled_past_half_the_transaction_timeout_commits_in_a_new_transaction(
    kafka_settings: KafkaSettings, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    # The transaction is begun while the batch is handled; an outage that outlasts half its
    # timeout must not leave the batch to a transaction the broker is about to abort.
    ids = [f"t{i}" for i in range(4)]
    await produce(
        kafka_settings.bootstrap_servers,
        topics.submitted,
        [(i, task(i), ce_headers("tandem.task.submitted.v1", i)) for i in ids],
    )
    group = f"g-{uuid.uuid4().hex}"
    relay = relay_to(topics.scored)
    down_until: float | None = None

    async def handler(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        nonlocal down_until
        if down_until is None:  # down for 1.5 s from the first try
            down_until = time.monotonic() + 1.5
        if time.monotonic() < down_until:
            raise TransientError("the database is down")
        return await relay(batch)  # type: ignore[no-any-return]

    async def caught_up() -> bool:
        return await committed(kafka_settings, group, [topics.submitted]) == len(ids)

    caplog.set_level(logging.INFO, logger="tandem_shared.loop")
    async with looping(
        kafka_settings, topics, handler, group, max_backoff_s=0.05, transaction_timeout_ms=2_000
    ) as (_, metrics):
        await eventually(caught_up, "the batch committed once the outage is over")
        assert metrics.committed.labels("test", topics.submitted)._value.get() == len(ids)

    assert any("begun again" in r.getMessage() for r in caplog.records)
    async with TopicReader(kafka_settings.bootstrap_servers, topics.scored) as reader:
        outputs = await reader.settle()
    assert sorted(r.key.decode() for r in outputs if r.key) == ids


async def test_a_loop_stopped_mid_batch_leaves_no_open_transaction_to_its_successor(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    # Stopped while its batch waits out an outage, the loop aborts the transaction it had
    # begun: the group's next member reads its offsets at once, not after the broker's
    # timeout of that transaction (10 s, and up to 10 s more before the broker looks).
    ids = [f"t{i}" for i in range(3)]
    await produce(
        kafka_settings.bootstrap_servers,
        topics.submitted,
        [(i, task(i), ce_headers("tandem.task.submitted.v1", i)) for i in ids],
    )
    group = f"g-{uuid.uuid4().hex}"
    attempts = 0

    async def down(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        nonlocal attempts
        attempts += 1
        raise TransientError("the database is down")

    async def retrying() -> bool:
        return attempts >= 3

    async with looping(kafka_settings, topics, down, group, max_backoff_s=0.05):
        await eventually(retrying, "the first member retrying its batch")

    async def caught_up() -> bool:
        return await committed(kafka_settings, group, [topics.submitted]) == len(ids)

    started = time.monotonic()
    async with looping(kafka_settings, topics, relay_to(topics.scored), group):
        await eventually(caught_up, "the next member to commit the batch")
    assert time.monotonic() - started < 8.0
    outputs = await consume(kafka_settings.bootstrap_servers, topics.scored, len(ids))
    assert sorted(r.key.decode() for r in outputs if r.key) == ids


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
