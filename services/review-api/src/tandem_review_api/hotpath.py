"""The statements of what reviewers do all day, claim-next and decide, a round trip each: a
claim is one statement, which returns the review as claimed; a decision writes all it changes
in one more (reading the review first only when this replica did not hand it out, see
claimed.py). Each is built once, with bound parameters, so a request only binds values (and
the statement stays prepared on its connection).

A decision does not lock the review while it is decided: the write is guarded by the claim as
it was read (still claimed by the same person, the same lease), so it applies in full or not at
all, and the caller reads again when it did not. Whoever changes a review's claim changes its
lease too, and no approval is added but with a change of status, so an unchanged claim means
the approvals read are still all there are."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    String,
    Update,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from tandem_shared.events import DecisionMade, TaskRouted

from tandem_review_api.queue import Approval, Review
from tandem_review_api.tables import approvals, first_looks, outbox, reviews, tasks

StepKind = Literal["decided", "awaiting_approval", "escalated"]


def status_is(status: str) -> ColumnElement[bool]:
    """``status = 'x'`` with the value written in the SQL, not bound: the planner then sees that
    the partial indexes on open reviews (status <> 'decided') apply, also to a statement
    prepared once and planned for any value. The statuses are this module's constants."""
    return reviews.c.status == literal_column(f"'{status}'")  # ~ of it is <>


def _param(name: str, column: Any) -> Any:
    """A bound parameter typed as ``column`` (PostgreSQL needs the type where a value is
    selected rather than compared, as in INSERT … SELECT). Named p_…: a parameter named as a
    column would be taken for a value to set in it."""
    return bindparam(f"p_{name}", type_=column.type)


# ---- claim-next ------------------------------------------------------------------------------


def qualified(postgres: bool) -> ColumnElement[bool]:
    """Reviews of the general queue, or of a named queue the caller is qualified for: the
    names bound as p_queues (PostgreSQL: a text array; SQLite: a JSON array in text).

    A CASE, not an OR: without statistics the planner takes ``queue IS NULL OR ...`` for a
    rare condition, and then sorts every open review rather than walk them in queue order
    (see takeable); a CASE it cannot look into, and guesses half."""
    if postgres:
        names = bindparam("p_queues", type_=postgresql.ARRAY(String(64)))
        member: ColumnElement[bool] = reviews.c.queue == any_(names)
    else:
        listed: Select[Any] = select(literal_column("value")).select_from(
            func.json_each(bindparam("p_queues", type_=String()))
        )
        member = reviews.c.queue.in_(listed.scalar_subquery())
    return case((reviews.c.queue.is_(None), true()), else_=member)


def queues_param(postgres: bool, names: Iterable[str]) -> object:
    """The p_queues value of ``qualified``."""
    ordered = sorted(names)
    return ordered if postgres else json.dumps(ordered)


def takeable(
    senior: bool, subject: Any, now: Any, queues: ColumnElement[bool]
) -> ColumnElement[bool]:
    """The reviews ``subject`` may claim at ``now``: open (pending, or a claim whose lease ran
    out), not approved by them already, and escalated ones for seniors only. The SQL form of
    queue.check_claim, for the reviews nobody named.

    Written as what they are not (decided, held, escalated) among the four statuses: without
    statistics (a table just filled) the planner takes such conditions for common ones, so it
    walks ix_reviews_open in queue order and stops at the first review it may take. Asked for
    ``status = 'pending'`` it guessed a handful, and sorted every open review first.
    ``queues``: which named queues the caller takes from (``qualified``)."""
    approved_already = (
        select(approvals.c.id)
        .where(approvals.c.review_id == reviews.c.review_id, approvals.c.reviewer == subject)
        .exists()
    )
    open_ = and_(~status_is("decided"), ~held_by_anyone(now), ~approved_already, queues)
    if senior:
        return open_
    return and_(open_, ~status_is("escalated"), reviews.c.senior_only.is_(False))


def held_by_anyone(now: Any) -> ColumnElement[bool]:
    """Reviews under a live claim."""
    return and_(status_is("claimed"), reviews.c.lease_expires_at > now)


def held_by(subject: Any, now: Any) -> ColumnElement[bool]:
    """The reviews ``subject`` holds a live claim on."""
    return and_(held_by_anyone(now), reviews.c.claimed_by == subject)


# Most urgent first: the highest priority, then the earliest due, then the oldest (the order of
# the index ix_reviews_open, so the first takeable one ends the scan).
QUEUE_ORDER = (
    reviews.c.priority.desc(),
    reviews.c.due_at,
    reviews.c.created_at,
    reviews.c.review_id,
)


@cache
def claim_next(senior: bool, postgres: bool) -> Update:
    """Claim the most urgent review the caller may take, if they hold fewer than p_most
    (parameters p_who, p_now, p_until, p_most, p_queues): the review as a decision reads it (see
    as_claimed), or no row. On PostgreSQL, rows another transaction holds are skipped, so
    reviewers asking at once get different reviews; SQLite serialises writers instead, which
    is as correct."""
    who, now = _param("who", reviews.c.claimed_by), _param("now", reviews.c.claimed_at)
    first = (
        select(reviews.c.review_id)
        .where(takeable(senior, who, now, qualified(postgres)))
        .order_by(*QUEUE_ORDER)
        .limit(literal_column("1"))  # written, not bound: a bound limit is planned as a guess
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    held = select(func.count()).where(held_by(who, now)).scalar_subquery()
    approved = select(func.count()).where(approvals.c.review_id == reviews.c.review_id)
    return (
        update(reviews)
        .where(reviews.c.review_id == first, held < bindparam("p_most"))
        .values(
            status="claimed",
            claimed_by=who,
            lease_expires_at=_param("until", reviews.c.lease_expires_at),
            claimed_at=now,
            active_seconds=literal_column("0"),  # a new claim: its time on task starts now
            active_at=now,
            updated_at=now,
        )
        .returning(
            reviews.c.review_id,
            reviews.c.routed,
            reviews.c.senior_only,
            reviews.c.traceparent,
            approved.scalar_subquery().label("approved"),
        )
    )


@cache
def unclaimed(senior: bool, postgres: bool) -> Select[tuple[bool, int]]:
    """After claim_next claimed nothing (parameters p_who, p_now, p_queues): whether a
    review waits for the caller all the same (held by another transaction's claim), and how
    many reviews they hold, in one statement. Idle reviewers ask an empty queue again and
    again: walking the open reviews in queue order (ix_reviews_open) it reads none of the
    decided ones. Not EXISTS: the planner drops an order inside it, and then reads the whole
    table."""
    who, now = _param("who", reviews.c.claimed_by), _param("now", reviews.c.claimed_at)
    first = (
        select(reviews.c.review_id)
        .where(takeable(senior, who, now, qualified(postgres)))
        .order_by(*QUEUE_ORDER)
        .limit(literal_column("1"))
        .scalar_subquery()
    )
    held = select(func.count()).where(held_by(who, now)).scalar_subquery()
    return select(first.is_not(None).label("waiting"), held.label("held"))


# ---- decide: the read ------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    review: Review
    traceparent: str | None


def as_claimed(row: Mapping[str, Any], who: str, now: datetime, until: datetime) -> Snapshot | None:
    """The review claim-next returned, as a decision reads it: the claim is the one just made.
    None for a review that has approvals already (a second approver's): it is read again."""
    if row["approved"]:
        return None
    review = Review(
        review_id=row["review_id"],
        status="claimed",
        routed=TaskRouted.model_validate(row["routed"]),
        claimed_by=who,
        lease_expires_at=until,
        senior_only=row["senior_only"],
        claimed_at=now,
        active_seconds=0.0,
        active_at=now,
    )
    return Snapshot(review, row["traceparent"])


# The review and its approvals (one row each, or one row of nulls), in one read.
SNAPSHOT: Select[Any] = (
    select(
        reviews.c.review_id,
        reviews.c.status,
        reviews.c.routed,
        reviews.c.claimed_by,
        reviews.c.lease_expires_at,
        reviews.c.senior_only,
        reviews.c.claimed_at,
        reviews.c.active_seconds,
        reviews.c.active_at,
        reviews.c.traceparent,
        approvals.c.reviewer,
        approvals.c.outcome,
        approvals.c.rationale,
        approvals.c.created_at.label("approved_at"),
        approvals.c.claimed_at.label("approver_claimed_at"),
        approvals.c.active_seconds.label("approver_active_seconds"),
    )
    .select_from(reviews.outerjoin(approvals, approvals.c.review_id == reviews.c.review_id))
    .where(reviews.c.review_id == bindparam("p_review"))
    .order_by(approvals.c.id)
)


def snapshot(rows: Sequence[Mapping[str, Any]]) -> Snapshot | None:
    """The review SNAPSHOT read, or None when there is none."""
    if not rows:
        return None
    first = rows[0]
    given = [approval_of(r, "approved_at", "approver_") for r in rows if r["reviewer"]]
    return Snapshot(review_of(first, given), first["traceparent"])


def approval_of(row: Mapping[Any, Any], at: str = "created_at", prefix: str = "") -> Approval:
    """An approval from its row (or from its columns in a row of SNAPSHOT, named apart)."""
    return Approval(
        row["reviewer"],
        row["outcome"],
        row["rationale"],
        row[at],
        row[f"{prefix}claimed_at"],
        row[f"{prefix}active_seconds"],
    )


def review_of(row: Mapping[Any, Any], given: Iterable[Approval]) -> Review:
    """A review from its row and its approvals (in the order they were given)."""
    return Review(
        review_id=row["review_id"],
        status=row["status"],
        routed=TaskRouted.model_validate(row["routed"]),
        claimed_by=row["claimed_by"],
        lease_expires_at=row["lease_expires_at"],
        approvals=tuple(given),
        senior_only=row["senior_only"],
        claimed_at=row["claimed_at"],
        active_seconds=row["active_seconds"],
        active_at=row["active_at"],
    )


# ---- decide: the write -----------------------------------------------------------------------


@dataclass(frozen=True)
class Approved:
    """All one approval changes: the review (``kind`` says to what), the approval itself, the
    task's decision when it is final, and the events for Kafka, as outbox rows."""

    review: Review  # as read: the write applies only while its claim is unchanged
    approval: Approval
    kind: StepKind
    back_to: str  # where a review waiting for another approver goes
    decision: DecisionMade | None
    events: list[dict[str, Any]]
    now: datetime

    @property
    def shape(self) -> tuple[StepKind, bool, int]:
        """What decides the statement: the step, whether a decision is recorded, how many
        events are written."""
        return self.kind, self.decision is not None, len(self.events)

    def params(self) -> dict[str, Any]:
        review, routed = self.review, self.review.routed
        values: dict[str, Any] = {
            "p_review": review.review_id,
            "p_who": self.approval.reviewer,
            "p_lease": review.lease_expires_at,
            "p_now": self.now,
            "p_outcome": self.approval.outcome,
            "p_rationale": self.approval.rationale,
            "p_claimed_at": self.approval.claimed_at,
            "p_active": self.approval.active_seconds,
            "p_useful": self.approval.rating.explanation_useful,
            "p_trust": self.approval.rating.trust,
            "p_note": self.approval.rating.note,
            "p_back_to": self.back_to,
            "p_task": routed.task.task_id,
            "p_task_type": routed.task.task_type,
            "p_submitted": routed.submitted_at,
        }
        if self.decision is not None:
            values["p_decision"] = self.decision.model_dump(mode="json")
        for n, row in enumerate(self.events):
            values.update({f"p_{name}_{n}": value for name, value in row.items()})
        return values


# The review's state after each step: decided (the holder stays named), escalated to a
# senior, or released for another approver.
_AFTER: dict[StepKind, dict[str, Any]] = {
    "decided": {
        "status": "decided",
        "outcome": _param("outcome", reviews.c.outcome),
        "decided_at": _param("now", reviews.c.decided_at),
        "lease_expires_at": None,
    },
    "escalated": {
        "status": "escalated",
        "senior_only": True,
        "claimed_by": None,
        "lease_expires_at": None,
        "escalation_reason": None,
    },
    "awaiting_approval": {
        "status": _param("back_to", reviews.c.status),
        "claimed_by": None,
        "lease_expires_at": None,
        "claimed_at": None,
    },
}


def _moved(kind: StepKind) -> Update:
    """The review's change, guarded by its claim as read."""
    return (
        update(reviews)
        .where(
            reviews.c.review_id == _param("review", reviews.c.review_id),
            status_is("claimed"),
            reviews.c.claimed_by == _param("who", reviews.c.claimed_by),
            reviews.c.lease_expires_at == _param("lease", reviews.c.lease_expires_at),
        )
        .values(**_AFTER[kind], updated_at=_param("now", reviews.c.updated_at))
    )


_APPROVAL_COLUMNS: tuple[str, ...] = (
    "review_id",
    "reviewer",
    "outcome",
    "rationale",
    "created_at",
    "claimed_at",
    "active_seconds",
    "explanation_useful",
    "trust",
    "note",
)
_TASK_COLUMNS: tuple[str, ...] = (
    "task_id",
    "task_type",
    "status",
    "submitted_at",
    "updated_at",
    "decision",
    "decided_at",
)
_OUTBOX_COLUMNS = ("topic", "key", "value", "headers", "created_at")


def _approval_values() -> list[Any]:
    c = approvals.c
    return [
        _param("review", c.review_id),
        _param("who", c.reviewer),
        _param("outcome", c.outcome),
        _param("rationale", c.rationale),
        _param("now", c.created_at),
        _param("claimed_at", c.claimed_at),
        _param("active", c.active_seconds),
        _param("useful", c.explanation_useful),
        _param("trust", c.trust),
        _param("note", c.note),
    ]


def _task_values() -> list[Any]:
    c = tasks.c
    return [
        _param("task", c.task_id),
        _param("task_type", c.task_type),
        literal_column("'decided'"),
        _param("submitted", c.submitted_at),
        _param("now", c.updated_at),
        _param("decision", c.decision),
        _param("now", c.decided_at),
    ]


def _event_values(n: int) -> list[Any]:
    """The ``n``th event's row, as Outbox.rows makes it."""
    return [_param(f"{name}_{n}", outbox.c[name]) for name in _OUTBOX_COLUMNS]


def _task_upsert(statement: Any) -> Any:
    """The task decided, inserted if unknown. Its status only moves forward (to decided, from
    anything), and its update time with it; people's decision replaces whatever a forged
    automatic one may have put first."""
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[tasks.c.task_id],
        set_={
            "status": excluded.status,
            "updated_at": case(
                (tasks.c.status == excluded.status, tasks.c.updated_at),
                else_=excluded.updated_at,
            ),
            "decision": excluded.decision,
            "decided_at": excluded.decided_at,
        },
    )


@cache
def approve_in_one(shape: tuple[StepKind, bool, int]) -> Select[Any]:
    """PostgreSQL: the whole write as one statement, each insert made from the guarded
    update's row, so none applies unless the review did; returns how many reviews changed
    (0 or 1). Events are inserted in the order given, and so get their ids (and their turn
    in the relay) in that order."""
    kind, decided, events = shape
    moved = _moved(kind).returning(reviews.c.review_id).cte("moved")
    writes: list[Any] = [
        insert(approvals)
        .from_select(_APPROVAL_COLUMNS, select(*_approval_values()).select_from(moved))
        .cte("approval")
    ]
    if decided:
        task = postgresql.insert(tasks).from_select(
            _TASK_COLUMNS, select(*_task_values()).select_from(moved)
        )
        writes.append(_task_upsert(task).cte("task"))
    if events:
        rows = [select(*_event_values(n)).select_from(moved) for n in range(events)]
        source = rows[0] if events == 1 else union_all(*rows)
        writes.append(insert(outbox).from_select(_OUTBOX_COLUMNS, source).cte("events"))
    return select(func.count().label("changed")).select_from(moved).add_cte(*writes)


@cache
def approve_in_turn(shape: tuple[StepKind, bool, int]) -> tuple[Update, list[Insert]]:
    """SQLite, which has no writes in a WITH: the guarded update, then (in the same
    transaction, only when it changed the review) the inserts."""
    kind, decided, events = shape
    inserts: list[Insert] = [
        insert(approvals).values(dict(zip(_APPROVAL_COLUMNS, _approval_values(), strict=True)))
    ]
    if decided:
        task = sqlite.insert(tasks).values(dict(zip(_TASK_COLUMNS, _task_values(), strict=True)))
        inserts.append(_task_upsert(task))
    inserts += [
        insert(outbox).values(dict(zip(_OUTBOX_COLUMNS, _event_values(n), strict=True)))
        for n in range(events)
    ]
    return _moved(kind), inserts


# ---- first look ------------------------------------------------------------------------------

# The verdicts kept on a blind review, by reviewer (parameter p_review).
FIRST_LOOKS: Select[Any] = select(first_looks.c.reviewer, first_looks.c.outcome).where(
    first_looks.c.review_id == bindparam("p_review")
)
_FIRST_LOOK_COLUMNS = ("review_id", "reviewer", "outcome", "created_at")


def _first_look_kept(insert: Any) -> Any:
    """The verdict of p_who on p_review, kept only while they hold its claim (parameters
    p_review, p_who, p_outcome, p_now), and once: a second is not taken."""
    c = first_looks.c
    held = select(
        reviews.c.review_id,
        _param("who", c.reviewer),
        _param("outcome", c.outcome),
        _param("now", c.created_at),
    ).where(
        reviews.c.review_id == _param("review", reviews.c.review_id),
        status_is("claimed"),
        reviews.c.claimed_by == _param("who", reviews.c.claimed_by),
        reviews.c.lease_expires_at > _param("now", reviews.c.lease_expires_at),
    )
    return insert.from_select(_FIRST_LOOK_COLUMNS, held).on_conflict_do_nothing()


@cache
def first_look_in_one() -> Update:
    """PostgreSQL: the verdict kept and the review's change time moved (the live stream shows
    the holder the model's view), in one statement; returns the review's row, or no row when
    the claim was not theirs or a verdict was kept already."""
    insert = _first_look_kept(postgresql.insert(first_looks))
    kept = insert.returning(first_looks.c.review_id).cte("kept")
    return (
        update(reviews)
        .where(reviews.c.review_id == kept.c.review_id)
        .values(updated_at=_param("now", reviews.c.updated_at))
        .returning(*reviews.c)
        .add_cte(kept)
    )


@cache
def first_look_in_turn() -> tuple[Insert, Update]:
    """SQLite: the guarded insert, then (in the same transaction, only when it kept one) the
    change time moved."""
    moved = (
        update(reviews)
        .where(reviews.c.review_id == _param("review", reviews.c.review_id))
        .values(updated_at=_param("now", reviews.c.updated_at))
        .returning(*reviews.c)
    )
    return _first_look_kept(sqlite.insert(first_looks)), moved
