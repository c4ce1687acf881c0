"""`tandem deadletter`: letters made by the real consumer loop on poison records, listed, shown,
and their originals sent back to the origin topic, from the topic or, once it is gone, from the
letter itself."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from tandem_cli.main import app
from tandem_cli.stack.process import free_port
from tandem_shared.deadletters import PAYLOAD_CHARS
from tandem_shared.envelope import Event
from tandem_shared.events import EventData, TaskSubmitted
from tandem_shared.kafka import Incoming, Result, event_decoder
from tandem_shared.loop import ConsumerLoop, LoopConfig
from tandem_shared.settings import KafkaSettings
from tandem_shared.telemetry import PipelineMetrics
from tandem_shared.topics import Topics
from typer.testing import CliRunner
from typer.testing import Result as CliResult

from tests.kafka_utils import ce_headers, consume, produce
from tests.service_utils import committed

runner = CliRunner()
TASK = "tandem.task.submitted.v1"
# Longer than a letter keeps: the letter's payload is cut, the original is not.
BIG = b'{"task_id": "big", "features": {"x": "' + b"y" * (PAYLOAD_CHARS * 2) + b'"'
POISON: list[tuple[str | None, bytes, list[tuple[str, bytes]]]] = [
    ("bad-json", b"{this is not json", [*ce_headers(TASK, "bad-json"), ("x-trace", b"a\xffb")]),
    ("bad-schema", json.dumps({"task_id": "bad-schema"}).encode(), ce_headers(TASK, "bad-schema")),
    ("big", BIG, ce_headers(TASK, "big")),
]


async def dead_letter(kafka: KafkaSettings, topics: Topics) -> None:
    """Run the scoring service's consumer loop (its decoder, a handler that accepts every valid
    task) over a good task and the poison records, until it has committed them all."""
    good = json.dumps({"task_id": "good", "task_type": "t", "features": {"x": 1.0}}).encode()
    records = [("good", good, ce_headers(TASK, "good")), *POISON]
    await produce(kafka.bootstrap_servers, topics.submitted, records)

    async def accept(batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        return [[] for _ in batch]

    group = f"g-{uuid.uuid4().hex}"
    loop = ConsumerLoop(
        kafka,
        group,
        [topics.submitted],
        event_decoder({TASK: TaskSubmitted}),
        accept,
        LoopConfig("scoring", topics.deadletter, backoff_s=0.01),
        PipelineMetrics(CollectorRegistry(), "test"),
        trace.get_tracer("test"),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    try:
        for _ in range(300):
            if await committed(kafka, group, [topics.submitted]) >= len(records):
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await running
    await consume(kafka.bootstrap_servers, topics.deadletter, len(POISON))


async def tandem(*args: str) -> CliResult:
    """The command line, in a thread: it runs its own event loop."""
    return await asyncio.to_thread(runner.invoke, app, ["deadletter", *args])


async def listed(*args: str) -> list[dict[str, Any]]:
    result = await tandem("list", "--json", *args)
    assert result.exit_code == 0, result.output
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def by_key(letters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {letter["origin"]["key"]: letter for letter in letters}


async def last_record(kafka: KafkaSettings, topic: str, partition: int) -> Any:
    records = await consume(kafka.bootstrap_servers, topic, 10**6, timeout=2)
    return [r for r in records if r.partition == partition][-1]


async def remove_records(kafka: KafkaSettings, topic: str) -> None:
    """What retention does: every record of ``topic`` so far is gone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        ends = {TopicPartition(topic, p): 10**6 for p in range(kafka.partitions)}
        records = await consume(kafka.bootstrap_servers, topic, 10**6, timeout=2)
        for r in records:
            ends[TopicPartition(topic, r.partition)] = r.offset + 1
        await admin.delete_records(
            {tp: RecordsToDelete(end) for tp, end in ends.items() if end < 10**6}
        )
    finally:
        await admin.close()


@pytest.fixture
def cli_env(kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("TANDEM_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    return kafka_settings


@pytest.mark.kafka
async def test_list_show_and_replay_letters_of_the_consumer_loop(
    cli_env: KafkaSettings, topics: Topics
) -> None:
    kafka = cli_env
    await dead_letter(kafka, topics)

    letters = by_key(await listed())
    assert set(letters) == {"bad-json", "bad-schema", "big"}
    assert all(
        letter["service"] == "scoring" and letter["origin"]["topic"] == topics.submitted
        for letter in letters.values()
    )
    assert "not JSON" in letters["bad-json"]["error"]
    assert letters["big"]["payload_truncated"] and letters["big"]["payload_size"] == len(BIG)
    assert letters["big"]["payload_sha256"] == hashlib.sha256(BIG).hexdigest()
    assert await listed("--service", "router") == []
    assert len(await listed("--origin-topic", topics.submitted, "--since", "1h")) == 3
    assert await listed("--since", "2999-01-01T00:00") == []

    plain = await tandem("list")
    assert plain.exit_code == 0, plain.output
    lines = plain.stdout.splitlines()
    assert len(lines) == 3
    bad = letters["bad-json"]
    origin = f"{topics.submitted}/{bad['origin']['partition']}/{bad['origin']['offset']}"
    (line,) = [text for text in lines if origin in text]
    assert line.startswith(bad["id"][:8]) and "scoring  EnvelopeError  value is not JSON" in line

    shown = await tandem("show", bad["id"][:8])
    assert shown.exit_code == 0, shown.output
    assert "{this is not json" in shown.stdout and bad["payload_sha256"] in shown.stdout
    assert "x-trace: a\ufffdb" in shown.stdout  # the letter keeps headers as text
    by_origin = await tandem("show", origin, "--json")
    assert json.loads(by_origin.stdout)["payload"] == "{this is not json"

    # Replayed from the origin topic: the original bytes, key and headers, unchanged, even
    # where the letter holds only their start or only their text.
    replayed = await tandem("replay", bad["id"], letters["big"]["id"][:10])
    assert replayed.exit_code == 0, replayed.output
    assert replayed.stdout.count("replayed ") == 2 and "from the original" in replayed.stdout
    for key, value, headers in [POISON[0], POISON[2]]:
        letter = letters[key]
        again = await last_record(kafka, topics.submitted, letter["origin"]["partition"])
        if again.key != key.encode():  # the two may share a partition: the other came last
            records = await consume(kafka.bootstrap_servers, topics.submitted, 10**6, timeout=2)
            again = [r for r in records if r.key == key.encode()][-1]
        assert again.offset > letter["origin"]["offset"]
        assert (again.key, again.value, list(again.headers)) == (key.encode(), value, headers)

    dry = await tandem("replay", "--all", "--dry-run", "--service", "scoring")
    assert dry.exit_code == 0 and dry.stdout.count("would replay ") == 3


@pytest.mark.kafka
async def test_a_letter_whose_original_is_gone_is_replayed_from_its_copy_or_refused(
    cli_env: KafkaSettings, topics: Topics
) -> None:
    kafka = cli_env
    await dead_letter(kafka, topics)
    await remove_records(kafka, topics.submitted)
    letters = by_key(await listed())

    replayed = await tandem("replay", letters["bad-schema"]["id"], letters["big"]["id"])
    assert replayed.exit_code == 1
    assert "from the letter's copy (the original is gone)" in replayed.stdout
    assert "refused" in replayed.stderr and "only the first" in replayed.stderr
    records = await consume(kafka.bootstrap_servers, topics.submitted, 1)
    (again,) = records
    key, value, headers = POISON[1]
    assert (again.key, again.value, list(again.headers)) == (key.encode(), value, headers)


@pytest.mark.kafka
async def test_unknown_ids_and_wrong_use_end_with_one_line(
    cli_env: KafkaSettings, topics: Topics
) -> None:
    await dead_letter(cli_env, topics)
    for args in (["show", "0000dead"], ["replay", "0000dead"]):
        result = await tandem(*args)
        assert result.exit_code == 1
        assert result.stderr.strip() == "error: no dead letter '0000dead' on the dead-letter topic"
    both = await tandem("replay", "abc", "--all")
    assert both.exit_code == 2 and "not both" in both.output
    nothing = await consume(cli_env.bootstrap_servers, topics.submitted, 10**6, timeout=1)
    assert len(nothing) == 1 + len(POISON)  # nothing was sent


async def test_without_a_broker_the_command_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    result = await tandem("list")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: Kafka at 127.0.0.1:") and "cannot read" in line
