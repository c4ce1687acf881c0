"""The outbox on SQLite and PostgreSQL: events are written in the transaction of the change they
report, or not at all; the relay sends them in order and removes only what Kafka acknowledged.
Kafka itself is outside the unit here (see test_kafka_outage.py for the real broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from tandem_review_api.errors import Unprocessable
from tandem_review_api.outbox import Outbox, Relay
from tandem_review_api.store import ReviewStore, RoutedRecord
from tandem_review_api.tables import outbox
from tandem_shared.auth import Principal
from tandem_shared.db import create_engine
from tandem_shared.envelope import event_id, header_map, utcnow
from tandem_shared.events import DecisionMade, FeedbackRecorded, TaskSubmitted
from tandem_shared.kafka import Record

from tests.kafka_utils import traceparent_for
from tests.review_api.apps import Parts
from tests.review_api.test_api import NOW, routed
from tests.service_utils import eventually

ALICE = Principal("alice", frozenset({"reviewer"}))
AUDITOR = Principal("ivy", frozenset({"auditor"}))


class FakeKafka:
    """Acknowledges what it is sent, after refusing ``refusals`` sends."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.sent: list[Record] = []

    async def __call__(self, records: Sequence[Record]) -> None:
        if self.refusals:
            self.refusals -= 1
            raise KafkaConnectionError("the broker is down")
        self.sent.extend(records)


def record(key: str, n: int = 0) -> Record:
    return Record(
        "t.some", key.encode(), f'{{"n": {n}}}'.encode(), [("ce_id", f"{key}/{n}".encode())]
    )


async def write(box: Outbox, store: ReviewStore, records: list[Record]) -> None:
    async with store.transaction() as s:
        await box.add(s, records)


async def claimed_review(parts: Parts, task_id: str) -> str:
    """A review of ``task_id``, routed with its trace and claimed by alice."""
    await parts.store.ingest([RoutedRecord(routed(task_id), traceparent_for(task_id))], [], NOW)
    _, review = await parts.store.task(task_id, AUDITOR, utcnow())
    assert review is not None
    claim = await parts.reviews.claim(str(review["review_id"]), ALICE)
    return claim.review_id


async def test_a_decision_writes_its_events_with_the_state_change(parts: Parts) -> None:
    rid = await claimed_review(parts, "t-1")
    parts.outbox.written.clear()

    result = await parts.reviews.decide(rid, ALICE, "malignant", "irregular margins")

    assert result.status == "decided"
    assert parts.outbox.written.is_set()  # the relay is woken by the commit
    feedback, decision = [r for _, r in await parts.outbox.take(10)]
    assert (feedback.topic, decision.topic) == (parts.topics.feedback, parts.topics.decisions)
    assert feedback.key == decision.key == b"t-1"
    label = FeedbackRecorded.model_validate_json(feedback.value)
    assert (label.label, label.reviewer) == ("malignant", "alice")
    made = DecisionMade.model_validate_json(decision.value)
    assert (made.outcome, made.decided_by, made.reviewers) == ("malignant", "human", ["alice"])
    headers = header_map(decision.headers)
    assert headers["ce_type"] == "tandem.decision.made.v1"
    assert headers["ce_subject"] == "t-1"
    # The record continues the task's trace, as it came in with the routed event.
    assert headers["traceparent"].split("-")[1] == traceparent_for("t-1").split("-")[1]
    async with parts.store.transaction() as s:
        _, review = await parts.store.load(s, rid)
    assert review.status == "decided"


async def test_the_event_ids_stay_those_of_the_task_and_stage(parts: Parts) -> None:
    rid = await claimed_review(parts, "t-2")
    await parts.reviews.decide(rid, ALICE, "benign", "fine")
    ids = [header_map(r.headers)["ce_id"] for _, r in await parts.outbox.take(10)]
    assert ids == [event_id("t-2", "feedback/alice"), event_id("t-2", "decision")]


async def refuse_outbox_rows(engine: AsyncEngine) -> None:
    """The database refuses the decision's last write, its events: what came before in the
    same write (the review, the approval, the task) must go with them."""
    refusal = "the database went away before the commit"
    statements = (
        [
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN RAISE EXCEPTION '{refusal}'; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]
        if engine.dialect.name == "postgresql"
        else [
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox"
            f" BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
        ]
    )
    async with engine.begin() as c:
        for statement in statements:
            await c.execute(text(statement))


async def test_a_failed_write_leaves_no_event_and_no_decision(parts: Parts) -> None:
    rid = await claimed_review(parts, "t-3")
    parts.outbox.written.clear()
    await refuse_outbox_rows(parts.store.engine)

    with pytest.raises(DBAPIError, match="went away"):
        await parts.reviews.decide(rid, ALICE, "malignant", "irregular margins")

    assert await parts.outbox.take(10) == []
    assert not parts.outbox.written.is_set()
    async with parts.store.transaction() as s:
        _, review = await parts.store.load(s, rid)
    row, _ = await parts.store.task("t-3", AUDITOR, utcnow())
    assert (review.status, review.claimed_by, review.approvals) == ("claimed", "alice", ())
    assert (row["status"], row["decision"]) == ("in_review", None)


async def test_http_ingress_writes_the_task_and_its_event_once(parts: Parts) -> None:
    task = TaskSubmitted(task_id="h-1", task_type="tumor_screening", features={"mean_radius": 12.0})

    assert await parts.reviews.submit(task) is True
    assert await parts.reviews.submit(task) is False  # a known id: nothing more

    [(_, submitted)] = await parts.outbox.take(10)
    assert (submitted.topic, submitted.key) == (parts.topics.submitted, b"h-1")
    assert TaskSubmitted.model_validate_json(submitted.value) == task
    row, _ = await parts.store.task("h-1", AUDITOR, utcnow())
    assert row["status"] == "submitted"


async def test_an_event_kafka_would_refuse_is_refused_with_its_task(parts: Parts) -> None:
    task = TaskSubmitted(
        task_id="big", task_type="tumor_screening", features={}, context={"scan": "x" * 30_000}
    )
    with pytest.raises(Unprocessable, match="at most 20000"):
        await parts.reviews.submit(task)
    assert await parts.outbox.take(10) == []
    assert await parts.reviews.submit(task.model_copy(update={"context": {}})) is True


async def test_the_relay_sends_in_id_order_and_removes_what_was_acknowledged(
    parts: Parts,
) -> None:
    await write(parts.outbox, parts.store, [record("a", 1), record("b", 1)])
    await write(parts.outbox, parts.store, [record("a", 2)])
    await write(parts.outbox, parts.store, [record("c", 1), record("b", 2)])
    kafka = FakeKafka()
    relay = Relay(parts.outbox, kafka, parts.metrics.outbox, batch=2)

    assert [await relay.relay_once() for _ in range(4)] == [2, 2, 1, 0]

    assert [(r.key, r.value) for r in kafka.sent] == [
        (b"a", b'{"n": 1}'),
        (b"b", b'{"n": 1}'),
        (b"a", b'{"n": 2}'),
        (b"c", b'{"n": 1}'),
        (b"b", b'{"n": 2}'),
    ]
    assert kafka.sent[0] == record("a", 1)  # topic, key, value and headers, byte for byte
    assert await parts.outbox.take(10) == []
    assert parts.metrics.outbox.published._value.get() == 5


async def test_what_kafka_did_not_acknowledge_stays_to_be_sent_again(parts: Parts) -> None:
    await write(parts.outbox, parts.store, [record("a", 1), record("b", 1)])
    kafka = FakeKafka(refusals=1)
    relay = Relay(parts.outbox, kafka, parts.metrics.outbox)

    with pytest.raises(KafkaConnectionError):
        await relay.relay_once()
    assert [r for _, r in await parts.outbox.take(10)] == [record("a", 1), record("b", 1)]
    assert parts.metrics.outbox.publish_failures._value.get() == 1

    assert await relay.relay_once() == 2
    assert kafka.sent == [record("a", 1), record("b", 1)]
    assert await parts.outbox.take(10) == []


async def test_the_relay_wakes_on_a_commit_and_outlasts_an_outage(parts: Parts) -> None:
    kafka = FakeKafka(refusals=3)
    # It would poll only once a minute: what it sends below, it sends because it was woken.
    relay = Relay(
        parts.outbox, kafka, parts.metrics.outbox, poll_s=60, backoff_s=0.01, max_backoff_s=0.05
    )
    relay.start()
    try:
        await asyncio.sleep(0.2)  # its first round found nothing and waits
        await write(parts.outbox, parts.store, [record("a", 1)])

        async def sent() -> bool:
            return kafka.sent == [record("a", 1)]

        await eventually(sent, "the relay to send the row", timeout=10)
        assert parts.metrics.outbox.publish_failures._value.get() == 3
    finally:
        await relay.stop()
    assert await parts.outbox.take(10) == []


async def test_the_relay_sends_what_is_waiting_before_it_stops(parts: Parts) -> None:
    kafka = FakeKafka()
    relay = Relay(parts.outbox, kafka, parts.metrics.outbox, batch=2, poll_s=60)
    relay.start()
    await asyncio.sleep(0.2)  # its first round found nothing; it would wait a minute now
    rows = parts.outbox.rows([record("a", n) for n in range(5)])
    async with parts.store.transaction() as s:  # written without waking it
        for row in rows:
            await s.execute(outbox.insert().values(row))

    await relay.stop()

    assert kafka.sent == [record("a", n) for n in range(5)]
    assert await parts.outbox.take(10) == []


async def test_one_replica_relays_at_a_time(parts: Parts, database_url: str) -> None:
    other_engine = create_engine(database_url)
    other = Outbox(other_engine, max_record_bytes=20_000)
    try:
        async with parts.outbox.turn() as first, other.turn() as second:
            assert first is not None
            # PostgreSQL: the advisory lock; SQLite serves one process, its relay one task.
            assert (second is not None) is database_url.startswith("sqlite")
        async with other.turn() as after:
            assert after is not None
    finally:
        await other_engine.dispose()


async def test_the_backlog_counts_what_waits_and_for_how_long(parts: Parts) -> None:
    empty = await parts.outbox.backlog(utcnow())
    assert (empty.depth, empty.oldest_age_s) == (0, 0.0)
    await write(parts.outbox, parts.store, [record("a", 1), record("b", 1)])
    later = await parts.outbox.backlog(utcnow() + timedelta(seconds=90))
    assert later.depth == 2
    assert 90 <= later.oldest_age_s < 100
