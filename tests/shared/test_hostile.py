"""The hostile-records corpus on every topic a Tandem service consumes, the four services running
in-process on the real broker: every record is dead-lettered with its origin and a reason, or
processed; no consumer stalls; valid tasks written after them are all decided."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from fastapi import FastAPI
from tandem_audit_sink.app import create_app as audit_app
from tandem_audit_sink.settings import AuditSettings
from tandem_cli.dataset import sample_tasks
from tandem_review_api.app import create_app as review_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_router.app import create_app as router_app
from tandem_router.settings import RouterSettings
from tandem_scoring.app import create_app as scoring_app
from tandem_scoring.settings import ScoringSettings
from tandem_shared.auth import mint_token
from tandem_shared.events import DeadLetter, DecisionMade
from tandem_shared.kafka import Consumed
from tandem_shared.reading import read_records
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import submit_tasks
from tests.service_utils import running
from tests.shared.hostile import ROLES, Hostile, RawName, Role, corpus

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

ALL = ("scoring", "router", "audit-sink", "review-api")

# Who consumes each topic, besides the audit sink (which consumes them all).
CONSUMERS: dict[Role, tuple[str, ...]] = {
    "submitted": ("scoring",),
    "scored": ("router",),
    "routed": ("review-api",),
    "decisions": ("review-api",),
    "control": ("router", "scoring"),
    "feedback": (),
    "deadletter": (),
}


@dataclass(frozen=True)
class Sent:
    record: Hostile
    topic: str
    partition: int
    offset: int

    @property
    def origin(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def topic_of(topics: Topics, role: Role) -> str:
    return {
        "submitted": topics.submitted,
        "scored": topics.scored,
        "routed": topics.routed,
        "decisions": topics.decisions,
        "control": topics.control,
        "feedback": topics.feedback,
        "deadletter": topics.deadletter,
    }[role]


async def write(kafka: KafkaSettings, topics: Topics, records: Sequence[Hostile]) -> list[Sent]:
    """Each record, with where the broker put it."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        sent = []
        for r in records:
            topic = topic_of(topics, r.role)
            if any(isinstance(name, RawName) for name, _ in r.headers):
                future = await send_raw(producer, topic, r)
            else:
                future = await producer.send(topic, r.value, key=r.key, headers=r.headers)
            sent.append((r, topic, future))
        done = []
        for r, topic, future in sent:
            meta = await future
            done.append(Sent(r, topic, meta.partition, meta.offset))
        return done
    finally:
        await producer.stop()


async def send_raw(producer: AIOKafkaProducer, topic: str, r: Hostile) -> Any:
    """Send a record whose header names are raw bytes: aiokafka's pure-Python batch writer
    encodes each name by calling its ``encode``, which a RawName answers with its bytes."""
    batch = producer.create_batch()
    batch._builder = _DefaultRecordBatchBuilderPy(
        2,
        0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=0,
        batch_size=16_384,
    )
    batch.append(timestamp=None, key=r.key, value=r.value, headers=r.headers)
    return await producer.send_batch(batch, topic, partition=0)


@dataclass
class Pipeline:
    api: httpx.AsyncClient | None  # the review API's, when it runs
    groups: dict[str, list[str]]  # each consumer group and its topics
    audit_db: Path


@asynccontextmanager
async def pipeline(
    kafka: KafkaSettings, topics: Topics, home: Path, only: Sequence[str] = ALL
) -> AsyncIterator[Pipeline]:
    """The services in-process (all four, or ``only`` those), groups of this test's own."""
    run = uuid.uuid4().hex[:8]
    quick: dict[str, Any] = {
        "kafka": kafka,
        "batch_timeout_ms": 50,
        "retry_backoff_s": 0.05,
        "max_attempts": 2,
    }
    made: dict[str, Callable[[], FastAPI]] = {
        "scoring": lambda: scoring_app(ScoringSettings(group_id=f"scoring-{run}", **quick)),
        "router": lambda: router_app(RouterSettings(group_id=f"router-{run}", **quick)),
        "audit-sink": lambda: audit_app(
            AuditSettings(
                group_id=f"audit-{run}",
                database_url=f"sqlite+aiosqlite:///{home / 'audit.db'}",
                **quick,
            )
        ),
        "review-api": lambda: review_app(
            ReviewApiSettings(
                group_id=f"review-{run}",
                database_url=f"sqlite+aiosqlite:///{home / 'review.db'}",
                overdue_check_seconds=3600,
                **quick,
            )
        ),
    }
    consumed = {
        "scoring": {f"scoring-{run}": [topics.submitted]},
        "router": {f"router-{run}": [topics.scored]},
        "audit-sink": {f"audit-{run}": topics.audited()},
        "review-api": {f"review-{run}": [topics.routed, topics.decisions]},
    }
    groups: dict[str, list[str]] = {}
    clients: dict[str, httpx.AsyncClient] = {}
    async with AsyncExitStack() as stack:
        for name in only:
            clients[name] = await stack.enter_async_context(running(made[name]()))
            groups |= consumed[name]
        followers = [f"{name}-{run}-control-" for name in only if name in ("scoring", "router")]
        groups |= await control_groups(kafka, followers, topics.control)
        yield Pipeline(clients.get("review-api"), groups, home / "audit.db")


async def control_groups(
    kafka: KafkaSettings, prefixes: Sequence[str], topic: str
) -> dict[str, list[str]]:
    """The group each router and scoring replica made for the control topic (its name ends
    in a random part), once the broker lists them all."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        for _ in range(100):
            listed = [str(g[0]) for g in await admin.list_consumer_groups()]
            names = [g for g in listed if g.startswith(tuple(prefixes))]
            if len(names) == len(prefixes):
                return {name: [topic] for name in names}
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    raise AssertionError(f"no control groups {prefixes} among {listed}")


async def lagging(kafka: KafkaSettings, groups: dict[str, list[str]]) -> dict[str, int]:
    """Each group's records not yet committed, over its topics' partitions (0: caught up)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await consumer.start()
    await admin.start()
    try:
        behind: dict[str, int] = {}
        for group, names in groups.items():
            partitions = [TopicPartition(t, p) for t in names for p in range(kafka.partitions)]
            ends = await consumer.end_offsets(partitions)
            done = await admin.list_consumer_group_offsets(group, partitions=partitions)
            behind[group] = sum(
                ends[tp] - (done[tp].offset if tp in done and done[tp].offset >= 0 else 0)
                for tp in partitions
            )
        return behind
    finally:
        await admin.close()
        await consumer.stop()


def token(subject: str) -> dict[str, str]:
    jwt = mint_token(RuntimeSettings(), subject, ["reviewer", "service"])
    return {"Authorization": f"Bearer {jwt}"}


async def decide_all(
    pipe: Pipeline, kafka: KafkaSettings, topics: Topics, truth: dict[str, str]
) -> dict[str, DecisionMade]:
    """People decide what was routed to them, until every task has its decision."""
    decisions: dict[str, DecisionMade] = {}
    headers = token("hostile-reviewer")
    api = pipe.api
    assert api is not None
    # The decisions are read back through the review API, which materialises them from
    # tandem.decisions: that topic holds hostile records too.
    for _ in range(300):
        for task_id in set(truth) - set(decisions):
            task = await api.get(f"/v1/tasks/{task_id}", headers=headers)
            if task.status_code != 200:
                continue
            if task.json()["decision"] is not None:
                decisions[task_id] = DecisionMade.model_validate(task.json()["decision"])
                continue
            review = task.json().get("review")
            if review is None or review["status"] != "pending":
                continue
            rid = review["review_id"]
            if (await api.post(f"/v1/reviews/{rid}/claim", headers=headers)).is_success:
                body = {"outcome": truth[task_id], "rationale": "checked"}
                await api.post(f"/v1/reviews/{rid}/decision", json=body, headers=headers)
        if set(decisions) == set(truth):
            return decisions
        await asyncio.sleep(0.2)
    raise AssertionError(f"never decided: {sorted(set(truth) - set(decisions))}")


def ledger_origins(db: Path) -> set[tuple[str, int, int]]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute('SELECT topic, partition, "offset" FROM ledger').fetchall()
    return {(t, p, o) for t, p, o in rows}


def judge(
    sent: Sequence[Sent], letters: dict[tuple[str, str, int, int], DeadLetter], stored: set[Any]
) -> list[str]:
    """What each record's consumers did that differs from what its kind expects."""
    wrong = []
    for s in sent:
        for service in CONSUMERS[s.record.role]:
            letter = letters.get((service, *s.origin))
            if s.record.expect == "dead" and (letter is None or not letter.error):
                wrong.append(f"{s.record.name}: {service} did not dead-letter it")
            if s.record.expect == "processed" and letter is not None:
                wrong.append(f"{s.record.name}: {service} dead-lettered it: {letter.error[:200]}")
        if s.origin not in stored:
            wrong.append(f"{s.record.name}: not in the audit ledger")
    return wrong


async def caught_up(kafka: KafkaSettings, groups: dict[str, list[str]], timeout: float) -> None:
    """Every group commits past the last record of its topics: no consumer stalls."""
    deadline = time.monotonic() + timeout
    while any((behind := await lagging(kafka, groups)).values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"consumers stalled, records not committed: {behind}")
        await asyncio.sleep(0.2)


async def dead_letters(
    kafka: KafkaSettings, topics: Topics
) -> dict[tuple[str, str, int, int], DeadLetter]:
    """The letters on the topic, by service and origin (topic, partition, offset)."""
    letters = {}

    def keep(r: Consumed) -> None:
        try:
            letter = DeadLetter.model_validate_json(r.value or b"")
        except ValueError:
            return  # the corpus's own records on the dead-letter topic
        key = (letter.service, letter.origin_topic, letter.origin_partition, letter.origin_offset)
        letters[key] = letter

    # Read as the services read (librdkafka): the topic holds header names aiokafka cannot parse.
    await read_records(kafka.bootstrap_servers, topics.deadletter, keep)
    return letters


async def test_hostile_records_on_every_topic_are_dead_lettered_or_processed(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    kafka = kafka_settings
    records = [r for role in ROLES for r in corpus(role)]
    assert all(len({r.kind for r in records if r.role == role}) >= 50 for role in ROLES)
    drawn = sample_tasks(6, seed=5)
    bodies = [{**b, "task_id": f"valid-{n}", "critical": False} for n, (b, _) in enumerate(drawn)]
    truth = {b["task_id"]: label for b, (_, label) in zip(bodies, drawn, strict=True)}
    async with pipeline(kafka, topics, tmp_path) as pipe:
        sent = await write(kafka, topics, records)
        # Written after every hostile record: each must still be decided.
        await submit_tasks(kafka.bootstrap_servers, topics.submitted, bodies)
        await decide_all(pipe, kafka, topics, truth)
        await caught_up(kafka, pipe.groups, timeout=60)
    wrong = judge(sent, await dead_letters(kafka, topics), ledger_origins(pipe.audit_db))
    assert not wrong, "\n".join(wrong)
    # The control topic now holds the corpus: the services that read it whole at start
    # still start, and become ready.
    async with pipeline(kafka, topics, tmp_path, only=("scoring", "router")):
        pass
