"""The shared consumer loop against the real broker: outputs, dead letters, commits, retries."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence

import pytest
from tandem_shared.envelope import Event
from tandem_shared.events import DeadLetter, EventData
from tandem_shared.kafka import Incoming, Rejected, Result
from tandem_shared.settings import KafkaSettings
from tandem_shared.telemetry import recording
from tandem_shared.topics import Topics

from tests.kafka_utils import ce_headers, consume, header, produce, traceparent_for
from tests.service_utils import committed
from tests.shared.loops import relay_to, run_loop, task

pytestmark = pytest.mark.kafka


async def test_a_batch_is_handled_in_slices_and_every_output_is_sent(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    ids = [f"t{i:02d}" for i in range(25)]
    records = [(i, task(i), ce_headers("tandem.task.submitted.v1", i)) for i in ids]
    records[7] = ("t07", b"{not json", ce_headers("tandem.task.submitted.v1", "t07"))
    await produce(kafka_settings.bootstrap_servers, topics.submitted, records)
    group = f"g-{uuid.uuid4().hex}"
    relay = relay_to(topics.scored)
    handled: list[int] = []

    async def handler(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        handled.append(len(batch))
        return await relay(batch)  # type: ignore[no-any-return]

    async def until() -> None:
        while await committed(kafka_settings, group, [topics.submitted]) < len(records):
            await asyncio.sleep(0.2)

    await run_loop(kafka_settings, topics, handler, group, until, slice_records=4)

    assert handled and max(handled) <= 4 and sum(handled) == 24
    outputs = await consume(kafka_settings.bootstrap_servers, topics.scored, 24)
    assert sorted(r.key.decode() for r in outputs) == [i for i in ids if i != "t07"]
    # Each output is where aiokafka's producer put its input, the topics being alike in size:
    # the loop's batched sends place records as the default partitioner does.
    inputs = await consume(kafka_settings.bootstrap_servers, topics.submitted, 25)
    assert len({r.partition for r in inputs}) > 1
    placed = {r.key: r.partition for r in inputs}
    assert {r.key: r.partition for r in outputs} == {k: placed[k] for k in placed if k != b"t07"}
    (letter,) = await consume(kafka_settings.bootstrap_servers, topics.deadletter, 1)
    assert letter.key == b"t07"


async def test_bad_records_are_dead_lettered_and_the_rest_flow_on(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    records = [
        ("a", task("a"), ce_headers("tandem.task.submitted.v1", "a")),
        ("b", b"{not json", ce_headers("tandem.task.submitted.v1", "b")),
        ("c", json.dumps({"task_id": "c"}).encode(), ce_headers("tandem.task.submitted.v1", "c")),
        ("d", task("d"), []),
        ("e", task("e"), ce_headers("tandem.task.submitted.v1", "e")),
    ]
    await produce(kafka_settings.bootstrap_servers, topics.submitted, records)
    group = f"g-{uuid.uuid4().hex}"

    async def until() -> None:
        while await committed(kafka_settings, group, [topics.submitted]) < len(records):
            await asyncio.sleep(0.2)

    await run_loop(kafka_settings, topics, relay_to(topics.scored), group, until)

    outputs = await consume(kafka_settings.bootstrap_servers, topics.scored, 2)
    assert sorted(r.key for r in outputs) == [b"a", b"e"]
    letters = await consume(kafka_settings.bootstrap_servers, topics.deadletter, 3)
    by_key = {r.key: DeadLetter.model_validate_json(r.value) for r in letters}
    assert set(by_key) == {b"b", b"c", b"d"}
    assert "not JSON" in by_key[b"b"].error
    assert by_key[b"b"].payload == "{not json"
    assert "task_type" in by_key[b"c"].error and "schema" in by_key[b"c"].error
    assert "ce_specversion" in by_key[b"d"].error
    assert by_key[b"b"].origin_topic == topics.submitted
    assert {letter.origin_offset for letter in by_key.values()} <= {0, 1, 2, 3, 4}
    assert all(header(r, "ce_type") == "tandem.deadletter.recorded.v1" for r in letters)


async def test_without_tracing_each_output_carries_its_input_trace_on(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    """No exporter, no spans: the producer's trace context still reaches the next service."""
    parents = {f"t-{n}": traceparent_for(f"t-{n}") for n in range(4)}
    records = [
        (k, task(k), [*ce_headers("tandem.task.submitted.v1", k), ("traceparent", p.encode())])
        for k, p in parents.items()
    ]
    await produce(kafka_settings.bootstrap_servers, topics.submitted, records)
    group = f"g-{uuid.uuid4().hex}"

    async def until() -> None:
        while await committed(kafka_settings, group, [topics.submitted]) < len(records):
            await asyncio.sleep(0.2)

    assert not recording()
    await run_loop(kafka_settings, topics, relay_to(topics.scored), group, until)
    outputs = await consume(kafka_settings.bootstrap_servers, topics.scored, len(records))
    assert {r.key.decode(): header(r, "traceparent") for r in outputs} == parents


async def test_a_poison_record_is_isolated_after_retries(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    ids = [f"task-{n}" for n in range(6)]
    await produce(
        kafka_settings.bootstrap_servers,
        topics.submitted,
        [(i, task(i), ce_headers("tandem.task.submitted.v1", i)) for i in ids],
    )
    calls = {"n": 0}
    inner = relay_to(topics.scored)

    async def handler(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        calls["n"] += 1
        if any(i.item.subject == "task-3" for i in batch):
            raise ValueError("cannot handle task-3")
        return await inner(batch)

    group = f"g-{uuid.uuid4().hex}"

    async def until() -> None:
        while await committed(kafka_settings, group, [topics.submitted]) < len(ids):
            await asyncio.sleep(0.2)

    metrics = await run_loop(kafka_settings, topics, handler, group, until)
    outputs = await consume(kafka_settings.bootstrap_servers, topics.scored, 5)
    assert sorted(r.key.decode() for r in outputs) == [i for i in ids if i != "task-3"]
    [letter] = await consume(kafka_settings.bootstrap_servers, topics.deadletter, 1)
    assert letter.key == b"task-3"
    assert "cannot handle task-3" in DeadLetter.model_validate_json(letter.value).error
    assert calls["n"] > 3  # retried, then handled record by record
    assert metrics.deadlettered.labels("test", topics.submitted)._value.get() == 1


async def test_handler_rejection_goes_to_dead_letter_without_retry(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await produce(
        kafka_settings.bootstrap_servers,
        topics.submitted,
        [(i, task(i), ce_headers("tandem.task.submitted.v1", i)) for i in ("ok", "no")],
    )
    inner = relay_to(topics.scored)

    async def handler(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        out = list(await inner(batch))
        return [
            Rejected("unknown task type") if i.item.subject == "no" else r
            for i, r in zip(batch, out, strict=True)
        ]

    group = f"g-{uuid.uuid4().hex}"

    async def until() -> None:
        while await committed(kafka_settings, group, [topics.submitted]) < 2:
            await asyncio.sleep(0.2)

    await run_loop(kafka_settings, topics, handler, group, until)
    [letter] = await consume(kafka_settings.bootstrap_servers, topics.deadletter, 1)
    assert DeadLetter.model_validate_json(letter.value).error == "unknown task type"
