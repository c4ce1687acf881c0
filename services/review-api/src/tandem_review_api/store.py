"""Reading and writing the review queue. Guards live in the WHERE clauses, so two replicas (or
two reviewers) racing for one review cannot both win, on PostgreSQL and SQLite alike."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import Executable
from tandem_shared.auth import Principal
from tandem_shared.db import insert_ignoring_conflicts, session_factory
from tandem_shared.events import DecisionMade, TaskRouted, TaskSubmitted

from tandem_review_api import hotpath
from tandem_review_api.direct import Direct
from tandem_review_api.errors import Conflict, NotFound, Unprocessable
from tandem_review_api.queue import Review
from tandem_review_api.stats import BlindVerdict, Flagged, Rated, ReviewFacts, model_label
from tandem_review_api.tables import (
    approvals,
    first_looks,
    flags,
    queue_activity,
    reviews,
    tasks,
)


@dataclass(frozen=True)
class RoutedRecord:
    routed: TaskRouted
    traceparent: str | None


@dataclass(frozen=True)
class FlagFilter:
    kind: str | None = None
    task_type: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class QueueFilter:
    status: str | None = None
    task_type: str | None = None
    assignee: str | None = None
    priority_min: int | None = None
    due_before: datetime | None = None


def _review_row(record: RoutedRecord) -> dict[str, Any]:
    """The reviews row a routed task makes (its id derived from the task's: a replay adds none)."""
    r = record.routed
    return {
        "review_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"review/{r.task.task_id}")),
        "task_id": r.task.task_id,
        "task_type": r.task.task_type,
        "status": "escalated" if r.route == "escalate" else "pending",
        "senior_only": r.route == "escalate",
        "priority": r.review_priority,
        "due_at": r.due_at,
        "qa_sample": r.qa_sample,
        "required_approvals": r.required_approvals,
        "routed": r.model_dump(mode="json"),
        "traceparent": record.traceparent,
        "created_at": r.routed_at,
        "queue": r.queue,
    }


def takeable(who: Principal, now: datetime) -> ColumnElement[bool]:
    """The reviews ``who`` may claim now (see hotpath.takeable)."""
    named = reviews.c.queue.in_(sorted(who.qualifications))
    queues = case((reviews.c.queue.is_(None), true()), else_=named)  # as hotpath.qualified
    return hotpath.takeable(who.has("senior"), who.subject, now, queues)


def visible_to(who: Principal, now: datetime) -> ColumnElement[bool]:
    """The reviews ``who`` may see: admins and auditors all of them; anyone else what they may
    claim now and what they hold, so a reviewer sees neither escalations nor decided work."""
    if who.has("admin") or who.has("auditor"):
        return true()
    return or_(hotpath.held_by(who.subject, now), takeable(who, now))


def revealed_to(who: Principal) -> ColumnElement[bool]:
    """Whether ``who`` sees a blind review's model view: anyone who may decide reviews once
    they recorded their first look on it; admins and auditors who do not review, always."""
    if not who.has("reviewer"):
        return true()
    return exists().where(
        first_looks.c.review_id == reviews.c.review_id, first_looks.c.reviewer == who.subject
    )


class ReviewStore:
    def __init__(self, engine: AsyncEngine, statements: AsyncEngine | None = None) -> None:
        """``statements``: connections in autocommit, for work that is one statement (on
        PostgreSQL; by default ``engine``'s, switched for each statement)."""
        self.engine = engine
        self.sessions = session_factory(engine)
        self.postgres = engine.dialect.name == "postgresql"
        # One statement, its own transaction: no BEGIN and COMMIT around it, a round trip each.
        self._autocommit = statements or engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _once(self) -> AsyncIterator[AsyncConnection]:
        """A connection for work that is one statement on PostgreSQL (in autocommit: one round
        trip); on SQLite, a transaction (which takes the write lock at its start)."""
        if self.postgres:
            async with self._autocommit.connect() as c:
                yield c
        else:
            async with self.engine.begin() as c:
                yield c

    async def _fetch(
        self, c: AsyncConnection, statement: Executable, params: dict[str, Any]
    ) -> Sequence[Mapping[str, Any]]:
        """The statement's rows: sent by asyncpg itself on PostgreSQL (see direct.py)."""
        if self.postgres:
            return await (await Direct.of(c)).fetch(statement, params)
        return cast(
            Sequence[Mapping[str, Any]], (await c.execute(statement, params)).mappings().all()
        )

    # --- from Kafka -------------------------------------------------------------------------

    async def ingest(
        self, routed: Sequence[RoutedRecord], decided: Sequence[DecisionMade], now: datetime
    ) -> None:
        """Materialise one consumed batch in one transaction; replays change nothing. The rows
        of a kind are written in one statement for the batch, not one a record."""
        async with self.transaction() as s:
            dialect = s.get_bind().dialect
            if routed:
                await s.execute(
                    insert_ignoring_conflicts(reviews, dialect),
                    [_review_row(record) for record in routed],
                )
                known = [
                    (rec.routed.task.task_id, rec.routed.task.task_type, rec.routed.submitted_at)
                    for rec in routed
                ]
                await self._upsert_tasks(s, known, "in_review", now)
            settled = await self._settled(s, {d.task_id for d in decided})
            unsettled = [d for d in decided if d.task_id not in settled]
            await self._upsert_tasks(
                s, [(d.task_id, d.task_type, d.submitted_at) for d in unsettled], "decided", now
            )
            for d in unsettled:
                unknown = [tasks.c.task_id == d.task_id, tasks.c.decision.is_(None)]
                if d.decided_by != "human":
                    # An automatic decision for a task people review (not a QA sample) is
                    # none the router made: people's decision is the task's.
                    unknown.append(~exists().where(*_reviewed_by_people(d.task_id)))
                await s.execute(
                    update(tasks)
                    .where(*unknown)
                    .values(decision=d.model_dump(mode="json"), decided_at=d.decided_at)
                )
                if d.decided_by == "human":
                    # The decision on Kafka is the truth: should the database not know it
                    # (restored from a backup, say), the review still ends decided.
                    await s.execute(
                        update(reviews)
                        .where(reviews.c.task_id == d.task_id, reviews.c.status != "decided")
                        .values(
                            status="decided",
                            outcome=d.outcome,
                            decided_at=d.decided_at,
                            claimed_by=None,
                            lease_expires_at=None,
                        )
                    )

    async def _settled(self, s: AsyncSession, task_ids: set[str]) -> set[str]:
        """The tasks among ``task_ids`` on which no decision can change anything: decided,
        a decision recorded, any review of theirs closed. Most decisions read back are this
        API's own, so each is checked in one query for all rather than written in four."""
        if not task_ids:
            return set()
        open_review = exists().where(
            reviews.c.task_id == tasks.c.task_id, ~hotpath.status_is("decided")
        )
        query = select(tasks.c.task_id).where(
            tasks.c.task_id.in_(task_ids),
            tasks.c.status == "decided",
            tasks.c.decision.is_not(None),
            ~open_review,
        )
        return set((await s.execute(query)).scalars())

    async def _upsert_tasks(
        self,
        s: AsyncSession,
        known: Sequence[tuple[str, str, datetime]],
        status: str,
        now: datetime,
    ) -> None:
        """The tasks (id, type, submitted at) recorded, and moved on to ``status`` where they
        are behind it: two statements for all of them."""
        if not known:
            return
        await s.execute(
            insert_ignoring_conflicts(tasks, s.get_bind().dialect),
            [
                {
                    "task_id": task_id,
                    "task_type": task_type,
                    "status": status,
                    "submitted_at": at,
                    "updated_at": now,
                }
                for task_id, task_type, at in known
            ],
        )
        # Status only moves forward: submitted → in_review → decided.
        forward = {"in_review": ["submitted"], "decided": ["submitted", "in_review"]}[status]
        await s.execute(
            update(tasks)
            .where(tasks.c.task_id.in_(sorted({task_id for task_id, _, _ in known})))
            .where(tasks.c.status.in_(forward))
            .values(status=status, updated_at=now)
        )

    async def add_submitted(self, s: AsyncSession, task: TaskSubmitted, now: datetime) -> bool:
        """Record a task submitted over HTTP; False when its id is already known."""
        inserted = await _rowcount(
            s,
            insert_ignoring_conflicts(tasks, s.get_bind().dialect).values(
                task_id=task.task_id,
                task_type=task.task_type,
                status="submitted",
                submitted_at=now,
                updated_at=now,
            ),
        )
        return inserted == 1

    # --- for people ---------------------------------------------------------------------------

    async def list_reviews(
        self, who: Principal, where: QueueFilter, limit: int, cursor: str | None, now: datetime
    ) -> tuple[list[RowMapping], str | None]:
        query = select(reviews, revealed_to(who).label("revealed")).where(visible_to(who, now))
        if where.status == "pending":
            # A claim whose lease ran out is back in the queue.
            query = query.where(
                or_(
                    reviews.c.status == "pending",
                    and_(reviews.c.status == "claimed", reviews.c.lease_expires_at <= now),
                )
            )
        elif where.status == "claimed":
            query = query.where(reviews.c.status == "claimed", reviews.c.lease_expires_at > now)
        elif where.status is not None:
            query = query.where(reviews.c.status == where.status)
        if where.task_type:
            query = query.where(reviews.c.task_type == where.task_type)
        if where.assignee:
            query = query.where(reviews.c.claimed_by == where.assignee)
        if where.priority_min is not None:
            query = query.where(reviews.c.priority >= where.priority_min)
        if where.due_before is not None:
            query = query.where(reviews.c.due_at < where.due_before)
        if cursor:
            query = query.where(_after(_decode_cursor(cursor)))
        query = query.order_by(*hotpath.QUEUE_ORDER).limit(limit + 1)
        async with self.sessions() as s:
            rows = list((await s.execute(query)).mappings())
        next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def report_facts(
        self, since: datetime, until: datetime
    ) -> tuple[list[DecisionMade], list[ReviewFacts], list[Flagged], dict[str, str | None]]:
        """The decisions taken in [since, until), the reviews created then, with their
        approvals, the flags raised then, and by task id the queue of each decision's review
        (a decision without one is absent), as the outcomes report reads them."""
        async with self.sessions() as s:
            decided = (
                await s.execute(
                    select(tasks.c.decision, reviews.c.review_id, reviews.c.queue)
                    .select_from(tasks.outerjoin(reviews, reviews.c.task_id == tasks.c.task_id))
                    .where(
                        tasks.c.decided_at >= since,
                        tasks.c.decided_at < until,
                        tasks.c.decision.is_not(None),
                    )
                )
            ).all()
            decisions = [DecisionMade.model_validate(d) for d, _, _ in decided]
            reviewed = zip(decisions, decided, strict=True)
            queues = {d.task_id: q for d, (_, review, q) in reviewed if review is not None}
            rows = list(
                (
                    await s.execute(
                        select(reviews).where(
                            reviews.c.created_at >= since, reviews.c.created_at < until
                        )
                    )
                ).mappings()
            )
            given: dict[str, list[RowMapping]] = {}
            blind: dict[tuple[str, str], str] = {}
            if rows:
                ids = [r["review_id"] for r in rows]
                for a in (
                    await s.execute(
                        select(approvals)
                        .where(approvals.c.review_id.in_(ids))
                        .order_by(approvals.c.id)
                    )
                ).mappings():
                    given.setdefault(a["review_id"], []).append(a)
                looks = select(
                    first_looks.c.review_id, first_looks.c.reviewer, first_looks.c.outcome
                )
                for review_id, reviewer, outcome in (
                    await s.execute(looks.where(first_looks.c.review_id.in_(ids)))
                ).all():
                    blind[(review_id, reviewer)] = outcome
            raised = (
                await s.execute(
                    select(flags.c.task_type, flags.c.model, flags.c.kind).where(
                        flags.c.created_at >= since, flags.c.created_at < until
                    )
                )
            ).all()
        facts = [_facts(r, given.get(r["review_id"], []), blind) for r in rows]
        return decisions, facts, [Flagged(*f) for f in raised], queues

    async def qa_reviews(self, since: datetime, until: datetime) -> list[ReviewFacts]:
        """The QA samples' reviews created in [since, until), without their approvals: what
        the live error budget watch counts (not the whole report's reading)."""
        query = select(reviews).where(
            reviews.c.qa_sample.is_(True),
            reviews.c.created_at >= since,
            reviews.c.created_at < until,
        )
        async with self.sessions() as s:
            rows = list((await s.execute(query)).mappings())
        return [_facts(r, [], {}) for r in rows]

    async def seen_by(self, review_id: str, who: Principal, now: datetime) -> RowMapping:
        """The review, if ``who`` may see it; NotFound alike when it is not there and when it
        is not theirs to see."""
        query = select(reviews, revealed_to(who).label("revealed")).where(
            reviews.c.review_id == review_id, visible_to(who, now)
        )
        async with self.sessions() as s:
            row = (await s.execute(query)).mappings().first()
        if row is None:
            raise NotFound(f"no review {review_id} for you")
        return row

    async def changed_since(
        self, since: datetime, who: Principal, now: datetime, limit: int = 500
    ) -> list[RowMapping]:
        """Reviews changed after ``since``, oldest change first, each with ``visible``: whether
        ``who`` may see it now."""
        query = (
            select(
                reviews,
                visible_to(who, now).label("visible"),
                revealed_to(who).label("revealed"),
            )
            .where(reviews.c.updated_at > since)
            .order_by(reviews.c.updated_at, reviews.c.review_id)
            .limit(limit)
        )
        async with self.sessions() as s:
            return list((await s.execute(query)).mappings())

    async def load(self, s: AsyncSession, review_id: str) -> tuple[RowMapping, Review]:
        row = (
            (
                await s.execute(
                    select(reviews).where(reviews.c.review_id == review_id).with_for_update()
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"no review {review_id}")
        given = (
            await s.execute(
                select(approvals).where(approvals.c.review_id == review_id).order_by(approvals.c.id)
            )
        ).mappings()
        return row, hotpath.review_of(row, map(hotpath.approval_of, given))

    async def claim(
        self,
        s: AsyncSession,
        review: Review,
        who: str,
        now: datetime,
        expires: datetime,
        active: float,
    ) -> None:
        """Give ``who`` the review until ``expires``, with ``active`` seconds worked on it by
        now; a claim of the holder's own keeps when it began."""
        renewed = review.lease_held(now) and review.claimed_by == who
        began = review.claimed_at if renewed and review.claimed_at is not None else now
        claimed = await _rowcount(
            s,
            update(reviews)
            .where(
                reviews.c.review_id == review.review_id,
                reviews.c.status == review.status,
                _unchanged(reviews.c.claimed_by, review.claimed_by),
                _unchanged(reviews.c.lease_expires_at, review.lease_expires_at),
            )
            .values(
                status="claimed",
                claimed_by=who,
                lease_expires_at=expires,
                claimed_at=began,
                active_seconds=active,
                active_at=now,
            ),
        )
        if claimed != 1:
            raise Conflict(f"review {review.review_id} was claimed by someone else just now")

    async def claims_held(self, s: AsyncSession | AsyncConnection, who: str, now: datetime) -> int:
        """How many reviews ``who`` holds a live claim on."""
        query = select(func.count()).where(hotpath.held_by(who, now))
        return int((await s.execute(query)).scalar_one())

    async def claim_next(
        self, who: Principal, now: datetime, until: datetime, most: int
    ) -> tuple[str, bool, hotpath.Snapshot | None] | None:
        """Claim the most urgent review ``who`` may take, until ``until``, unless they hold
        ``most`` already: its id, whether it is blind, and the review as claimed
        (hotpath.as_claimed); or None (nothing waiting, or ``who`` at the limit)."""
        params = {"p_who": who.subject, "p_now": now, "p_until": until, "p_most": most}
        params["p_queues"] = hotpath.queues_param(self.postgres, who.qualifications)
        statement = hotpath.claim_next(who.has("senior"), self.postgres)
        async with self._once() as c:
            rows = await self._fetch(c, statement, params)
        if not rows:
            return None
        row = rows[0]
        blind = bool(row["routed"].get("blind", False))
        return row["review_id"], blind, hotpath.as_claimed(row, who.subject, now, until)

    async def unclaimed_why(self, who: Principal, now: datetime) -> tuple[bool, int]:
        """After claim_next found nothing: whether any review waits for ``who`` (locked by
        another claim or not), and how many reviews they hold."""
        params = {"p_who": who.subject, "p_now": now}
        params["p_queues"] = hotpath.queues_param(self.postgres, who.qualifications)
        statement = hotpath.unclaimed(who.has("senior"), self.postgres)
        async with self._once() as c:
            [row] = await self._fetch(c, statement, params)
        return bool(row["waiting"]), int(row["held"])

    async def snapshot(self, review_id: str) -> hotpath.Snapshot:
        """The review with its approvals and its trace, read once and not locked; NotFound
        when there is none."""
        async with self._once() as c:
            rows = await self._fetch(c, hotpath.SNAPSHOT, {"p_review": review_id})
        found = hotpath.snapshot(rows)
        if found is None:
            raise NotFound(f"no review {review_id}")
        return found

    async def approve(self, approved: hotpath.Approved) -> bool:
        """Write all one approval changes, or nothing: False when the review's claim is no
        longer the one read (nothing was written)."""
        params = approved.params()
        try:
            async with self._once() as c:
                if self.postgres:
                    [row] = await self._fetch(c, hotpath.approve_in_one(approved.shape), params)
                    return int(row["changed"]) == 1
                moved, inserts = hotpath.approve_in_turn(approved.shape)
                if (await _rowcount(c, moved, params)) != 1:
                    return False
                for insert in inserts:
                    await c.execute(insert, params)
                return True
        except IntegrityError as exc:
            if not _approved_twice(exc):
                raise
            who, review_id = approved.approval.reviewer, approved.review.review_id
            raise Conflict(f"{who} already decided review {review_id}") from exc

    async def keep_first_look(
        self, review_id: str, who: str, outcome: str, now: datetime
    ) -> Mapping[str, Any] | None:
        """``who``'s verdict before the reveal, kept once and only while they hold the claim,
        and the review's change time moved (its holder's view is revealed on the live stream
        too): the review's row, or None when nothing was kept (not their claim, or kept
        already). One statement on PostgreSQL."""
        params = {"p_review": review_id, "p_who": who, "p_outcome": outcome, "p_now": now}
        async with self._once() as c:
            if self.postgres:
                rows = await self._fetch(c, hotpath.first_look_in_one(), params)
                return rows[0] if rows else None
            kept, moved = hotpath.first_look_in_turn()
            if await _rowcount(c, kept, params) != 1:
                return None
            row = (await c.execute(moved, params)).mappings().first()
            return None if row is None else dict(row)

    async def add_flag(
        self, review_id: str, who: Principal, kind: str, note: str | None, now: datetime
    ) -> dict[str, Any]:
        """``who`` flags a review they may see for the owners; once a kind each (409 again)."""
        query = select(reviews.c.task_id, reviews.c.task_type, reviews.c.routed).where(
            reviews.c.review_id == review_id, visible_to(who, now)
        )
        async with self.transaction() as s:
            row = (await s.execute(query)).mappings().first()
            if row is None:
                raise NotFound(f"no review {review_id} for you")
            model = TaskRouted.model_validate(row["routed"]).score.model
            flag = {
                "review_id": review_id,
                "task_id": row["task_id"],
                "task_type": row["task_type"],
                "model": model_label(model),
                "reviewer": who.subject,
                "kind": kind,
                "note": note,
                "created_at": now,
            }
            insert = insert_ignoring_conflicts(flags, self.engine.dialect).values(flag)
            if await _rowcount(s, insert) != 1:
                raise Conflict(f"you flagged review {review_id} as {kind} already")
        return flag

    async def list_flags(
        self, where: FlagFilter, limit: int, cursor: int | None
    ) -> tuple[list[RowMapping], int | None]:
        """Flags, newest first; the cursor is the last id of the page before."""
        query = select(flags)
        if where.kind:
            query = query.where(flags.c.kind == where.kind)
        if where.task_type:
            query = query.where(flags.c.task_type == where.task_type)
        if where.since is not None:
            query = query.where(flags.c.created_at >= where.since)
        if cursor is not None:
            query = query.where(flags.c.id < cursor)
        query = query.order_by(flags.c.id.desc()).limit(limit + 1)
        async with self.sessions() as s:
            rows = list((await s.execute(query)).mappings())
        next_cursor = int(rows[limit - 1]["id"]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def day_of(
        self, who: str, since: datetime
    ) -> tuple[list[tuple[str, str, float | None]], int]:
        """``who``'s approvals since then, each (outcome, the model's prediction, time on
        task), and how many flags they raised."""
        given = select(approvals.c.outcome, reviews.c.routed, approvals.c.active_seconds).join(
            reviews, reviews.c.review_id == approvals.c.review_id
        )
        raised = select(func.count()).where(flags.c.reviewer == who, flags.c.created_at >= since)
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    given.where(approvals.c.reviewer == who, approvals.c.created_at >= since)
                )
            ).all()
            count = int((await s.execute(raised)).scalar_one())
        return [(o, routed["score"]["prediction"], seconds) for o, routed, seconds in rows], count

    async def first_looks(self, review_id: str) -> dict[str, str]:
        """The verdicts given blind on the review, by reviewer."""
        async with self._once() as c:
            rows = await self._fetch(c, hotpath.FIRST_LOOKS, {"p_review": review_id})
        return {str(r["reviewer"]): str(r["outcome"]) for r in rows}

    async def extend_lease(
        self,
        s: AsyncSession,
        review: Review,
        who: str,
        expires: datetime,
        now: datetime,
        active: float,
    ) -> None:
        """Hold the review until ``expires``, ``active`` seconds worked on it by now; a claim
        that does not know when it began (made before the column was) begins now."""
        began = review.claimed_at or now
        await s.execute(
            update(reviews)
            .where(reviews.c.review_id == review.review_id, reviews.c.claimed_by == who)
            .values(
                lease_expires_at=expires, claimed_at=began, active_seconds=active, active_at=now
            )
        )

    async def release(self, s: AsyncSession, review_id: str, back_to: str = "pending") -> None:
        await s.execute(
            update(reviews)
            .where(reviews.c.review_id == review_id)
            .values(status=back_to, claimed_by=None, lease_expires_at=None, claimed_at=None)
        )

    async def escalate(self, s: AsyncSession, review_id: str, reason: str | None = None) -> None:
        await s.execute(
            update(reviews)
            .where(reviews.c.review_id == review_id)
            .values(
                status="escalated",
                senior_only=True,
                claimed_by=None,
                lease_expires_at=None,
                escalation_reason=reason,
            )
        )

    async def overdue(self, s: AsyncSession, now: datetime, limit: int) -> list[str]:
        """Open reviews past their due time and not yet handled, the longest overdue first."""
        query = (
            select(reviews.c.review_id)
            .where(
                reviews.c.breached_at.is_(None),
                reviews.c.status != "decided",
                reviews.c.due_at <= now,
            )
            .order_by(reviews.c.due_at)
            .limit(limit)
        )
        return list((await s.execute(query)).scalars())

    async def mark_breached(self, s: AsyncSession, review_id: str, now: datetime) -> None:
        await s.execute(
            update(reviews).where(reviews.c.review_id == review_id).values(breached_at=now)
        )

    async def decide_by_policy(
        self, s: AsyncSession, review: Review, decision: DecisionMade, now: datetime
    ) -> None:
        """The policy's fallback outcome closes the review, whoever held it."""
        await s.execute(
            update(reviews)
            .where(reviews.c.review_id == review.review_id)
            .values(
                status="decided",
                outcome=decision.outcome,
                decided_at=now,
                claimed_by=None,
                lease_expires_at=None,
            )
        )
        await self._record_decision(s, review, decision, now)

    async def _record_decision(
        self, s: AsyncSession, review: Review, decision: DecisionMade, now: datetime
    ) -> None:
        task_id = review.routed.task.task_id
        known = [(task_id, review.routed.task.task_type, review.routed.submitted_at)]
        await self._upsert_tasks(s, known, "decided", now)
        # People's decision replaces whatever a forged automatic one may have put first.
        await s.execute(
            update(tasks)
            .where(tasks.c.task_id == task_id)
            .values(decision=decision.model_dump(mode="json"), decided_at=now)
        )

    async def task(
        self, task_id: str, who: Principal, now: datetime
    ) -> tuple[RowMapping, RowMapping | None]:
        """The task and its review. Producers, admins and auditors read any task; a reviewer
        only one whose review they may see (NotFound alike for the others)."""
        async with self.sessions() as s:
            row = (
                (await s.execute(select(tasks).where(tasks.c.task_id == task_id)))
                .mappings()
                .first()
            )
            review = (
                (
                    await s.execute(
                        select(
                            reviews,
                            visible_to(who, now).label("visible"),
                            revealed_to(who).label("revealed"),
                        ).where(reviews.c.task_id == task_id)
                    )
                )
                .mappings()
                .first()
            )
        sees_all = any(who.has(role) for role in ("admin", "auditor", "service"))
        if row is None or not (sees_all or (review is not None and review["visible"])):
            raise NotFound(f"no task {task_id}" + ("" if sees_all else " for you"))
        return row, review

    async def note_activity(self, queues: Sequence[str], now: datetime) -> None:
        """Someone qualified for ``queues`` asked for work now."""
        statement = (postgresql.insert if self.postgres else sqlite.insert)(queue_activity)
        upsert = statement.on_conflict_do_update(
            index_elements=[queue_activity.c.queue],
            set_={"active_at": statement.excluded.active_at},
        )
        async with self._once() as c:
            await c.execute(upsert, [{"queue": q, "active_at": now} for q in queues])

    async def unattended(self, now: datetime) -> dict[str, float]:
        """For each named queue with reviews waiting: the seconds since someone qualified for
        it last asked for work, or since its oldest waiting review arrived if that is later."""
        waiting = (
            select(reviews.c.queue, func.min(reviews.c.created_at))
            .where(~hotpath.status_is("decided"), reviews.c.queue.is_not(None))
            .group_by(reviews.c.queue)
        )
        async with self.sessions() as s:
            oldest: dict[str, datetime] = dict((await s.execute(waiting)).all())
            seen: dict[str, datetime] = {}
            if oldest:
                seen = dict((await s.execute(select(queue_activity))).all())
        return {
            str(queue): _age(now, max(since, seen.get(queue, since)))
            for queue, since in oldest.items()
        }

    async def queue_depth(self, now: datetime) -> dict[str, QueueDepth]:
        """Reviews not yet decided by status: how many, and how long the oldest has waited
        (read from ix_reviews_open, not the decided reviews of all time)."""
        async with self.sessions() as s:
            rows = await s.execute(
                select(reviews.c.status, func.count(), func.min(reviews.c.created_at))
                .where(~hotpath.status_is("decided"))
                .group_by(reviews.c.status)
            )
            return {
                str(status): QueueDepth(int(count), _age(now, oldest))
                for status, count, oldest in rows.all()
            }


@dataclass(frozen=True)
class QueueDepth:
    count: int
    oldest_age_s: float


def _reviewed_by_people(task_id: str) -> tuple[ColumnElement[bool], ...]:
    """The task has a review whose outcome is its decision (a QA sample's is feedback only)."""
    return (reviews.c.task_id == task_id, reviews.c.qa_sample.is_(False))


def _approved_twice(exc: IntegrityError) -> bool:
    """Whether the error is a second approval by one person (uq_approvals_reviewer), as
    PostgreSQL (by the constraint's name) and SQLite (by its columns) word it."""
    message = str(exc.orig)
    return "uq_approvals_reviewer" in message or "approvals.reviewer" in message


def _age(now: datetime, since: datetime | None) -> float:
    """Seconds since ``since`` (min() keeps the column's type: an aware UTC time)."""
    return 0.0 if since is None else max((now - since).total_seconds(), 0.0)


async def _rowcount(
    s: AsyncSession | AsyncConnection, statement: Any, params: dict[str, Any] | None = None
) -> int:
    result = cast(CursorResult[Any], await s.execute(statement, params))
    return int(result.rowcount)


def _unchanged(column: Any, value: object) -> Any:
    """Optimistic guard: the column still holds what we read."""
    return column.is_(None) if value is None else column == value


Position = tuple[int, datetime, datetime, str]


def _after(position: Position) -> Any:
    """Rows after ``position`` in QUEUE_ORDER (priority descending, the rest ascending)."""
    priority, due_at, created_at, review_id = position
    c = reviews.c
    return or_(
        c.priority < priority,
        and_(c.priority == priority, c.due_at > due_at),
        and_(c.priority == priority, c.due_at == due_at, c.created_at > created_at),
        and_(
            c.priority == priority,
            c.due_at == due_at,
            c.created_at == created_at,
            c.review_id > review_id,
        ),
    )


def _encode_cursor(row: RowMapping) -> str:
    position = [
        row["priority"],
        row["due_at"].isoformat(),
        row["created_at"].isoformat(),
        row["review_id"],
    ]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _decode_cursor(cursor: str) -> Position:
    try:
        priority, due_at, created_at, review_id = json.loads(
            base64.urlsafe_b64decode(cursor.encode())
        )
        return (
            int(priority),
            datetime.fromisoformat(due_at),
            datetime.fromisoformat(created_at),
            str(review_id),
        )
    except (ValueError, TypeError) as exc:
        raise Unprocessable("cursor is not one this API returned") from exc


# Routing reasons that tell what the model said: a blind review shows the others only.
MODEL_REASONS = frozenset(
    {
        "confident",
        "low_confidence",
        "very_low_confidence",
        "unknown_outcome",
        "outcome_not_automatic",
    }
)
# What a blind review hides until the reviewer recorded a first look: the model's view.
_MODEL_VIEW = ("prediction", "confidence", "probabilities", "explanation")


def review_item(row: Mapping[Any, Any], now: datetime) -> dict[str, Any]:
    """The JSON a front-end gets for one review. A blind review read without ``revealed`` (see
    revealed_to) shows no model view: its outcome, confidence, probabilities, explanation and
    the reasons that tell them are null or left out until the reader records a first look."""
    routed = TaskRouted.model_validate(row["routed"])
    expired = row["status"] == "claimed" and (
        row["lease_expires_at"] is None or row["lease_expires_at"] <= now
    )
    item = _review_fields(row, routed, expired)
    revealed = not routed.blind or bool(row.get("revealed", False))
    item["blind"], item["revealed"] = routed.blind, revealed
    if not revealed:
        item.update(dict.fromkeys(_MODEL_VIEW))
        item["reasons"] = [r for r in routed.reasons if r not in MODEL_REASONS]
    return item


def _review_fields(row: Mapping[Any, Any], routed: TaskRouted, expired: bool) -> dict[str, Any]:
    return {
        "review_id": row["review_id"],
        "task_id": row["task_id"],
        "task_type": row["task_type"],
        "status": ("escalated" if row["senior_only"] else "pending") if expired else row["status"],
        "priority": row["priority"],
        "due_at": row["due_at"],
        "qa_sample": row["qa_sample"],
        "required_approvals": row["required_approvals"],
        "critical": routed.task.critical,
        "features": routed.task.features,
        "context": routed.task.context,
        "prediction": routed.score.prediction,
        "confidence": routed.score.confidence,
        "probabilities": routed.score.probabilities,
        "explanation": [c.model_dump() for c in routed.score.explanation],
        "quality_flags": [f.model_dump() for f in routed.score.quality_flags],
        "model": routed.score.model.model_dump(),
        "policy": routed.policy.model_dump(),
        "reasons": routed.reasons,
        "outcomes": routed.outcomes,
        "claimed_by": None if expired else row["claimed_by"],
        "lease_expires_at": None if expired else row["lease_expires_at"],
        "outcome": row["outcome"],
        "escalation_reason": row["escalation_reason"],
        "queue": routed.queue,
        "created_at": row["created_at"],
        "decided_at": row["decided_at"],
    }


def _facts(
    row: RowMapping, approved: list[RowMapping], blind: Mapping[tuple[str, str], str]
) -> ReviewFacts:
    """``approved``: the review's approvals in order; ``blind``: first looks by (review,
    reviewer)."""
    routed = TaskRouted.model_validate(row["routed"])
    model, policy = routed.score.model, routed.policy
    review_id = row["review_id"]
    looks = tuple(
        BlindVerdict(a["reviewer"], blind[(review_id, a["reviewer"])], a["outcome"])
        for a in approved
        if (review_id, a["reviewer"]) in blind
    )
    ratings = tuple(
        Rated(a["explanation_useful"], a["trust"], a["note"] is not None)
        for a in approved
        if a["explanation_useful"] is not None or a["trust"] is not None or a["note"] is not None
    )
    return ReviewFacts(
        task_type=row["task_type"],
        model=model_label(model),
        policy=f"{policy.name} v{policy.version}",
        qa_sample=row["qa_sample"],
        prediction=routed.score.prediction,
        outcome=row["outcome"] if row["status"] == "decided" else None,
        approvals=tuple(a["outcome"] for a in approved),
        approvers=tuple(a["reviewer"] for a in approved),
        breached=row["breached_at"] is not None,
        created_at=row["created_at"],
        first_looks=looks,
        active_seconds=tuple(
            a["active_seconds"] for a in approved if a["active_seconds"] is not None
        ),
        ratings=ratings,
        queue=row["queue"],
        segment=routed.segment,
        confidence=routed.score.confidence,
    )
