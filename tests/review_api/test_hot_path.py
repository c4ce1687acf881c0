"""Claim-next and decide as one round trip each (SQLite and PostgreSQL, no broker): a decision
on a review this replica handed out is written without reading it first, and still refused
or read again whenever the claim changed since; decisions read back from Kafka that the
database already holds change nothing; the queue query walks its index on a table never
analysed."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.sql import Executable
from tandem_review_api import hotpath
from tandem_review_api.errors import Conflict, NotFound
from tandem_review_api.store import RoutedRecord
from tandem_review_api.tables import reviews, tasks
from tandem_shared.auth import Principal
from tandem_shared.envelope import utcnow
from tandem_shared.events import DecisionMade, ModelRef, PolicyRef

from tests.review_api.apps import Parts
from tests.review_api.test_api import NOW, routed

ANA = Principal("ana", frozenset({"reviewer"}))
BEN = Principal("ben", frozenset({"reviewer"}))
AUDITOR = Principal("ivy", frozenset({"auditor"}))


async def queued(parts: Parts, *task_ids: str) -> None:
    await parts.store.ingest([RoutedRecord(routed(t), None) for t in task_ids], [], NOW)


async def statuses(parts: Parts) -> dict[str, tuple[str, str | None]]:
    async with parts.store.transaction() as s:
        rows = await s.execute(select(reviews.c.task_id, reviews.c.status, reviews.c.claimed_by))
        return {task: (status, holder) for task, status, holder in rows.all()}


async def moved_elsewhere(parts: Parts, review_id: str, **values: Any) -> None:
    """What another replica did to the review meanwhile."""
    async with parts.store.transaction() as s:
        await s.execute(update(reviews).where(reviews.c.review_id == review_id).values(**values))


async def test_a_review_handed_out_here_is_decided_on_what_the_claim_returned(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queued(parts, "t-1")
    claim = await parts.reviews.claim(None, ANA)

    async def no_read(review_id: str) -> hotpath.Snapshot:
        raise AssertionError("the claim's own review was read again")

    monkeypatch.setattr(parts.store, "snapshot", no_read)
    decided = await parts.reviews.decide(claim.review_id, ANA, "benign", "fine")

    assert (decided.status, decided.outcome, decided.approvals) == ("decided", "benign", 1)
    assert (await statuses(parts))["t-1"] == ("decided", "ana")
    assert len(await parts.outbox.take(10)) == 2  # feedback and decision


async def test_a_lease_extended_on_another_replica_is_read_again_and_decided(
    parts: Parts,
) -> None:
    await queued(parts, "t-2")
    claim = await parts.reviews.claim(None, ANA)
    await moved_elsewhere(parts, claim.review_id, lease_expires_at=utcnow() + timedelta(hours=1))

    decided = await parts.reviews.decide(claim.review_id, ANA, "malignant", "irregular")

    assert decided.status == "decided"
    assert (await statuses(parts))["t-2"] == ("decided", "ana")


async def test_a_claim_that_lapsed_and_went_to_another_is_refused_though_remembered(
    parts: Parts,
) -> None:
    await queued(parts, "t-3")
    claim = await parts.reviews.claim(None, ANA)
    # Ana's lease ran out and Ben took the review on another replica.
    later = utcnow() + timedelta(minutes=5)
    await moved_elsewhere(parts, claim.review_id, claimed_by="ben", lease_expires_at=later)

    with pytest.raises(Conflict, match="do not hold the claim"):
        await parts.reviews.decide(claim.review_id, ANA, "benign", "fine")

    assert (await statuses(parts))["t-3"] == ("claimed", "ben")
    assert await parts.outbox.take(10) == []


async def test_a_review_decided_meanwhile_is_not_decided_twice(parts: Parts) -> None:
    await queued(parts, "t-4")
    claim = await parts.reviews.claim(None, ANA)
    await moved_elsewhere(parts, claim.review_id, status="decided", lease_expires_at=None)

    with pytest.raises(Conflict, match="already decided"):
        await parts.reviews.decide(claim.review_id, ANA, "benign", "fine")
    assert await parts.outbox.take(10) == []


async def test_a_second_approval_by_the_same_person_is_refused_by_the_database(
    parts: Parts,
) -> None:
    """Two approvers are needed; should Ana come to hold the review again (as a race could
    leave it), her second approval is refused by the unique constraint, and nothing else."""
    await parts.store.ingest([RoutedRecord(routed("t-7", critical=True), None)], [], NOW)
    claim = await parts.reviews.claim(None, ANA)
    first = await parts.reviews.decide(claim.review_id, ANA, "benign", "fine")
    assert first.status == "awaiting_approval"
    lease = utcnow() + timedelta(minutes=5)
    await moved_elsewhere(
        parts, claim.review_id, status="claimed", claimed_by="ana", lease_expires_at=lease
    )
    sent = len(await parts.outbox.take(10))

    with pytest.raises(Conflict, match="ana already decided"):
        await parts.reviews.decide(claim.review_id, ANA, "benign", "again")

    assert (await statuses(parts))["t-7"] == ("claimed", "ana")
    assert len(await parts.outbox.take(10)) == sent


async def test_claim_next_refuses_past_the_limit_and_says_when_nothing_waits(
    parts: Parts,
) -> None:
    await queued(parts, *(f"t-{n}" for n in range(6)))
    for _ in range(5):
        await parts.reviews.claim(None, ANA)
    with pytest.raises(Conflict, match="you hold 5 reviews"):
        await parts.reviews.claim(None, ANA)
    assert (await parts.reviews.claim(None, BEN)).claimed_by == "ben"
    with pytest.raises(NotFound, match="no review is waiting"):
        await parts.reviews.claim(None, BEN)


def people(task_id: str, outcome: str) -> DecisionMade:
    return DecisionMade(
        task_id=task_id,
        task_type="tumor_screening",
        outcome=outcome,
        decided_by="human",
        confidence=0.8,
        model=ModelRef(name="tumor_screening", version="1"),
        policy=PolicyRef(name="default", version=1),
        reviewers=["ana"],
        submitted_at=NOW,
        decided_at=NOW,
    )


async def test_a_decision_read_back_for_what_the_database_holds_changes_nothing(
    parts: Parts,
) -> None:
    await queued(parts, "t-5")
    claim = await parts.reviews.claim(None, ANA)
    await parts.reviews.decide(claim.review_id, ANA, "benign", "fine")
    row, _ = await parts.store.task("t-5", Principal("ivy", frozenset({"auditor"})), utcnow())

    await parts.store.ingest([], [people("t-5", "malignant")], utcnow())

    again, review = await parts.store.task(
        "t-5", Principal("ivy", frozenset({"auditor"})), utcnow()
    )
    assert dict(again) == dict(row)
    assert review is not None and review["outcome"] == "benign"


async def test_a_decision_read_back_still_closes_a_review_the_database_left_open(
    parts: Parts,
) -> None:
    """Restored from a backup: the task's decision is known, its review still open."""
    await queued(parts, "t-6")
    async with parts.store.transaction() as s:
        decision = json.loads(people("t-6", "benign").model_dump_json())
        await s.execute(
            update(tasks)
            .where(tasks.c.task_id == "t-6")
            .values(status="decided", decision=decision, decided_at=NOW)
        )

    await parts.store.ingest([], [people("t-6", "benign")], utcnow())

    assert (await statuses(parts))["t-6"] == ("decided", None)


async def task_statuses(parts: Parts) -> dict[str, str]:
    async with parts.store.transaction() as s:
        rows = await s.execute(select(tasks.c.task_id, tasks.c.status))
        return {row.task_id: row.status for row in rows}


async def test_a_batch_written_a_statement_a_kind_is_what_record_by_record_was(
    parts: Parts,
) -> None:
    """A consumed batch's rows go in one statement of each kind: a task routed twice in the
    batch has one review, a task's status only moves forward (a routing read after the
    task's decision leaves it decided), and the batch read again changes nothing."""

    def by_model(task_id: str) -> DecisionMade:
        return people(task_id, "benign").model_copy(update={"decided_by": "model"})

    await parts.store.ingest([], [by_model("t-auto")], NOW)
    batch = [RoutedRecord(routed(t), None) for t in ("t-a", "t-b", "t-a", "t-auto")]

    for _ in range(2):
        await parts.store.ingest(batch, [by_model("t-c")], NOW)

        assert await statuses(parts) == {
            "t-a": ("pending", None),
            "t-b": ("pending", None),
            "t-auto": ("pending", None),
        }
        assert await task_statuses(parts) == {
            "t-a": "in_review",
            "t-b": "in_review",
            "t-auto": "decided",
            "t-c": "decided",
        }


async def generic_plan(parts: Parts, statement: Executable, values: dict[str, object]) -> str:
    """The plan PostgreSQL makes for the statement prepared once, for any value."""
    done = statement.compile(dialect=parts.store.engine.dialect)
    params = done.construct_params(values)
    ordered = tuple(params[name] for name in done.positiontup or ())
    async with parts.store.engine.connect() as c:
        await c.execute(text("SET plan_cache_mode = force_generic_plan"))
        return "\n".join(row[0] for row in await c.exec_driver_sql(f"EXPLAIN {done}", ordered))


@pytest.mark.parametrize("senior", [False, True])
async def test_claim_next_walks_the_open_queue_in_order_on_a_table_never_analysed(
    parts: Parts, database_url: str, senior: bool
) -> None:
    """Prepared once, the statement is planned for any value (a generic plan). Without
    statistics the planner guesses; the query must leave it nothing to guess wrong."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's planner")
    await queued(parts, *(f"q-{n}" for n in range(300)))
    now = utcnow()
    values = {"p_who": "ana", "p_now": now, "p_until": now, "p_most": 5, "p_queues": ["q"]}
    plan = await generic_plan(parts, hotpath.claim_next(senior, True), values)
    assert "Index Scan using ix_reviews_open" in plan, plan
    assert "Sort" not in plan, plan


@pytest.mark.parametrize("senior", [False, True])
async def test_an_empty_queue_is_answered_from_the_open_reviews_alone(
    parts: Parts, database_url: str, senior: bool
) -> None:
    """Idle reviewers ask an empty queue again and again: why nothing was claimed is read from
    the open reviews, never from the decided ones that fill the table in time."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's planner")
    await queued(parts, *(f"q-{n}" for n in range(300)))
    values = {"p_who": "ana", "p_now": utcnow(), "p_queues": ["q"]}
    plan = await generic_plan(parts, hotpath.unclaimed(senior, True), values)
    assert "Index Scan using ix_reviews_open" in plan, plan
    assert "Seq Scan on reviews" not in plan, plan


async def test_connections_the_server_closed_are_replaced_without_a_ping(
    parts: Parts, database_url: str
) -> None:
    """The engines ping no connection before use: one PostgreSQL closed (a restart, an idle
    timeout) is seen closed when the pool hands it out, and replaced."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's connections")
    await queued(parts, "t-8", "t-9")
    await parts.reviews.claim(None, ANA)  # the pools now hold open connections
    async with parts.store.engine.connect() as c:
        await c.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    await asyncio.sleep(0.2)  # the closed sockets reach the event loop

    claim = await parts.reviews.claim(None, BEN)
    decided = await parts.reviews.decide(claim.review_id, BEN, "benign", "fine")
    assert decided.status == "decided"
