"""The HTTP API front-end apps call: the review queue, decisions, tasks and HTTP ingress."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import RowMapping
from tandem_shared.envelope import utcnow
from tandem_shared.events import ModelRef, TaskSubmitted
from tandem_shared.limits import ReviewIdParam, TaskIdParam
from tandem_shared.times import Timestamp, WindowError, bounded_window, timestamp

from tandem_review_api import links, live, stats
from tandem_review_api.errors import RESPONSES, Conflict, Unprocessable
from tandem_review_api.history import History
from tandem_review_api.inputs import strict_json
from tandem_review_api.queue import Rating
from tandem_review_api.references import References
from tandem_review_api.reviews import Claim, ReviewService
from tandem_review_api.roles import Overseer, Producer, QueueReader, Reviewer, TaskReader
from tandem_review_api.store import FlagFilter, QueueFilter, ReviewStore, review_item


# Coroutines, not functions: FastAPI runs a plain function dependency in a worker thread, a
# hand-off that cost more than the rest of the dependencies together.
async def _service(request: Request) -> ReviewService:
    service: ReviewService = request.app.state.reviews
    return service


async def _store(request: Request) -> ReviewStore:
    store: ReviewStore = request.app.state.store
    return store


async def _references(request: Request) -> References:
    references: References = request.app.state.references
    return references


Reviews = Annotated[ReviewService, Depends(_service)]
Store = Annotated[ReviewStore, Depends(_store)]
Ranges = Annotated[References, Depends(_references)]


async def _history(request: Request) -> History:
    history: History = request.app.state.history
    return history


TaskHistory = Annotated[History, Depends(_history)]
# Bodies read as the document says (no 0 for false): ingress is where a producer learns it.
TaskIn = Annotated[TaskSubmitted, strict_json(TaskSubmitted)]
# The next_cursor of a page, urlsafe base64: a position in the queue, not a value to make up.
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]+={0,2}$",
        description="The next_cursor of the page before; any other value is 422.",
    ),
]


class DecisionBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"outcome": "malignant", "rationale": "irregular border on the image"}]
        }
    )

    outcome: str = Field(
        min_length=1, max_length=64, description="One of the review's outcomes; others are 422."
    )
    rationale: str = Field(
        min_length=1, max_length=4000, description="Why; kept in the audit trail."
    )
    explanation_useful: int | None = Field(
        default=None, ge=1, le=5, description="How useful the model's explanation was, 1 to 5."
    )
    trust: int | None = Field(
        default=None, ge=1, le=5, description="How much you trust the model on this case, 1 to 5."
    )
    note: str | None = Field(
        default=None, min_length=1, max_length=2000, description="A note for the model's owners."
    )


class FlagBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"kind": "model_wrong", "note": "obvious benign case"}]}
    )

    kind: Literal["model_wrong", "data_broken", "other"] = Field(
        description="model_wrong: the model is clearly wrong here; data_broken: the case's data "
        "looks broken; other: say what in the note."
    )
    note: str | None = Field(default=None, min_length=1, max_length=2000)


class Flag(BaseModel):
    review_id: str
    task_id: str
    task_type: str
    model: str
    reviewer: str
    kind: str
    note: str | None
    created_at: datetime


class FlagPage(BaseModel):
    items: list[Flag]
    next_cursor: int | None


class FirstLookBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"outcome": "benign"}]})

    outcome: str = Field(
        min_length=1,
        max_length=64,
        description="Your verdict before the model's view is shown: one of the review's "
        "outcomes; others are 422.",
    )


class EscalationBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "unlike any case I have seen"}]}
    )

    reason: str = Field(min_length=1, max_length=2000, description="Why a senior should decide.")


class ClaimOut(BaseModel):
    review_id: str
    claimed_by: str
    lease_expires_at: datetime
    blind: bool = Field(
        description="Record your first look (POST .../first-look) before you decide: the"
        " model's view is shown after it."
    )


class DecisionOut(BaseModel):
    review_id: str
    status: str
    outcome: str | None
    approvals: int
    required_approvals: int


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


class Accepted(BaseModel):
    task_id: str
    status: Literal["accepted", "already_submitted"]


router = APIRouter(prefix="/v1", responses=RESPONSES)


@router.get("/reviews", response_model=Page, tags=["reviews"], responses=links.QUEUE_PAGE)
async def list_reviews(
    who: QueueReader,
    store: Store,
    request: Request,
    status: Literal["pending", "claimed", "escalated", "decided"] | None = None,
    task_type: str | None = None,
    assignee: str | None = None,
    priority_min: Annotated[int | None, Query(ge=0, le=100)] = None,
    due_before: Timestamp | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> Page:
    """The queue, most urgent first (priority, then due time); ``next_cursor`` pages on. A
    reviewer sees the reviews they may claim now and those they hold; a senior escalations
    too; admins and auditors every review."""
    now = utcnow()
    where = QueueFilter(status, task_type, assignee, priority_min, due_before)
    rows, next_cursor = await store.list_reviews(who, where, limit, cursor, now)
    return Page(items=[review_item(r, now) for r in rows], next_cursor=next_cursor)


@router.get("/reviews/events", tags=["reviews"], response_class=StreamingResponse)
async def review_events(
    who: QueueReader,
    store: Store,
    request: Request,
    since: Timestamp | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: each change to a review the caller may see, as the queue shows it
    (``review``), and ``gone`` when one leaves their view. A reconnecting client sends
    Last-Event-ID and misses nothing; ``since`` starts from a given time, for a reviewer no
    earlier than their token was issued. The stream ends (``expired``) when the token does.
    503 when the replica serves as many streams as it may."""
    subscribers: live.Subscribers = request.app.state.subscribers
    if subscribers.full:
        raise HTTPException(
            503, "too many live streams on this replica; try again", headers={"Retry-After": "5"}
        )
    start = since or _event_time(last_event_id) or utcnow()
    if not (who.has("admin") or who.has("auditor")):
        start = max(start, who.issued_at or utcnow())
    settings = request.app.state.runtime.settings
    events = live.stream(
        live.ChangeFeed(store, start, who),
        request.is_disconnected,
        settings.events_poll_seconds,
        who.expires_at,
    )
    return StreamingResponse(
        subscribers.counted(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event_time(event_id: str | None) -> datetime | None:
    if not event_id:
        return None
    try:
        return timestamp(event_id)
    except ValueError as exc:
        raise Unprocessable("Last-Event-ID is not one this API sent") from exc


@router.post("/reviews/next", response_model=ClaimOut, tags=["reviews"], responses=links.CLAIMED)
async def claim_next(who: Reviewer, reviews: Reviews) -> ClaimOut:
    """Claim the most urgent review you may take (404 when none is waiting)."""
    return _claim_out(await reviews.claim(None, who))


@router.post(
    "/reviews/{review_id}/heartbeat",
    response_model=ClaimOut,
    tags=["reviews"],
    responses=links.CLAIMED,
)
async def heartbeat(review_id: ReviewIdParam, who: Reviewer, reviews: Reviews) -> ClaimOut:
    """Extend your lease on a review you are still working on."""
    return _claim_out(await reviews.heartbeat(review_id, who))


@router.post(
    "/reviews/{review_id}/escalate",
    status_code=204,
    tags=["reviews"],
    responses=links.ESCALATED,
)
async def escalate(
    review_id: ReviewIdParam, body: EscalationBody, who: Reviewer, reviews: Reviews
) -> Response:
    """Hand a review you hold to the senior queue, with the reason."""
    await reviews.escalate(review_id, who, body.reason)
    return Response(status_code=204)


@router.get("/reviews/{review_id}", tags=["reviews"], responses=links.REVIEW_READ)
async def get_review(
    review_id: ReviewIdParam, who: QueueReader, store: Store, references: Ranges
) -> dict[str, Any]:
    """A review the caller may see (as in the list), with ``feature_ranges``: each feature
    beside the ranges of the model's manifest and where its value stands, in words (null when
    the model registry does not hold the version); 404 for any other."""
    now = utcnow()
    return _in_context(review_item(await store.seen_by(review_id, who, now), now), references)


@router.get("/reviews/{review_id}/history", tags=["reviews"])
async def review_history(
    review_id: ReviewIdParam, who: QueueReader, store: Store, history: TaskHistory, request: Request
) -> dict[str, Any]:
    """The review's task history: every event of its task in the audit ledger, in pipeline
    order (as ``GET /v1/audit/tasks/{task_id}`` of the audit API returns it), read with your
    token, so the audit API's roles decide who sees it (auditors). 404 for a review you may
    not see; 409 on a blind review before your first look (the history holds the model's
    view); 403 when the audit API refuses your token; 503 when it does not answer, or none is
    configured (``TANDEM_REVIEW_API_AUDIT_URL``)."""
    row = await store.seen_by(review_id, who, utcnow())
    if row["routed"].get("blind") and not row["revealed"]:
        raise Conflict("record your first look first: the task's history shows the model's view")
    return await history.of(row["task_id"], request.headers["authorization"])


def _in_context(item: dict[str, Any], references: References) -> dict[str, Any]:
    """A review as one reader sees it in full: with its features' ranges."""
    ranges = references.ranges(ModelRef.model_validate(item["model"]), item["features"])
    item["feature_ranges"] = None if ranges is None else [r.model_dump() for r in ranges]
    return item


@router.post(
    "/reviews/{review_id}/claim",
    response_model=ClaimOut,
    tags=["reviews"],
    responses=links.CLAIMED,
)
async def claim(review_id: ReviewIdParam, who: Reviewer, reviews: Reviews) -> ClaimOut:
    return _claim_out(await reviews.claim(review_id, who))


def _claim_out(c: Claim) -> ClaimOut:
    return ClaimOut(
        review_id=c.review_id,
        claimed_by=c.claimed_by,
        lease_expires_at=c.lease_expires_at,
        blind=c.blind,
    )


@router.post(
    "/reviews/{review_id}/release",
    status_code=204,
    tags=["reviews"],
    responses=links.RELEASED,
)
async def release(review_id: ReviewIdParam, who: Reviewer, reviews: Reviews) -> Response:
    await reviews.release(review_id, who)
    return Response(status_code=204)


@router.post(
    "/reviews/{review_id}/flags",
    status_code=201,
    response_model=Flag,
    tags=["reviews"],
)
async def flag(review_id: ReviewIdParam, body: FlagBody, who: Reviewer, reviews: Reviews) -> Flag:
    """Flag a review you may see for the model's owners ("model clearly wrong", "data looks
    broken"): listed by GET /v1/flags, counted in tandem_review_flags_total. Once a kind per
    person and review (409 again)."""
    return Flag(**await reviews.flag(review_id, who, body.kind, body.note))


@router.get("/me/today", response_model=stats.Today, tags=["reviews"])
async def my_day(who: Reviewer, store: Store) -> stats.Today:
    """Your own numbers since the start of the day (UTC): approvals given, the share that
    agreed with the model, your mean time on task, flags raised."""
    now = utcnow()
    since = now.replace(hour=0, minute=0, second=0, microsecond=0)
    given, flags = await store.day_of(who.subject, since)
    return stats.today(who.subject, since, given, flags)


@router.get("/flags", response_model=FlagPage, tags=["outcomes"])
async def list_flags(
    _: Overseer,
    store: Store,
    kind: Literal["model_wrong", "data_broken", "other"] | None = None,
    task_type: str | None = None,
    since: Timestamp | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        int | None,
        Query(ge=1, description="The next_cursor of the page before; any other value is 422."),
    ] = None,
) -> FlagPage:
    """Cases reviewers flagged for the owners, newest first (senior, admin, auditor)."""
    rows, next_cursor = await store.list_flags(FlagFilter(kind, task_type, since), limit, cursor)
    return FlagPage(
        items=[Flag(**{k: r[k] for k in Flag.model_fields}) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/reviews/{review_id}/first-look", tags=["reviews"], responses=links.FIRST_LOOK_RECORDED
)
async def first_look(
    review_id: ReviewIdParam,
    body: FirstLookBody,
    who: Reviewer,
    reviews: Reviews,
    references: Ranges,
) -> dict[str, Any]:
    """On a blind review you hold: your verdict from the features and context alone. It is
    kept (once; a second is 409) and the review comes back with the model's outcome,
    confidence and explanation; then decide, keeping your verdict or changing it. 409 on a
    review that is not blind or that you do not hold."""
    item = review_item(await reviews.first_look(review_id, who, body.outcome), utcnow())
    return _in_context(item, references)


@router.post(
    "/reviews/{review_id}/decision",
    response_model=DecisionOut,
    tags=["reviews"],
    responses=links.DECIDED,
)
async def decide(
    review_id: ReviewIdParam, body: DecisionBody, who: Reviewer, reviews: Reviews
) -> DecisionOut:
    rating = Rating(body.explanation_useful, body.trust, body.note)
    r = await reviews.decide(review_id, who, body.outcome, body.rationale, rating)
    return DecisionOut(
        review_id=r.review_id,
        status=r.status,
        outcome=r.outcome,
        approvals=r.approvals,
        required_approvals=r.required_approvals,
    )


@router.get("/stats", response_model=stats.Report, tags=["outcomes"])
async def outcomes(
    _: Overseer,
    store: Store,
    request: Request,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    group_by: stats.GroupBy = "task_type",
) -> stats.Report:
    """Automation, overrides, reviewer agreement, QA accuracy, time to decision, SLA breaches
    and reviewer time saved, per task type, model version, policy version, day or review
    queue (the general one is "(general)"; decisions of tasks no one reviewed, "(no review)").
    The window defaults to the last 7 days, and spans at most ``stats_max_days`` (92): each
    call reads the whole window; a longer one, or one that ends before it starts, is 422."""
    settings = request.app.state.runtime.settings
    try:
        start, end = bounded_window(since, until, settings.stats_max_days, utcnow())
    except WindowError as exc:
        raise Unprocessable(str(exc)) from exc
    decisions, reviews, flags, queues = await store.report_facts(start, end)
    minutes = settings.minutes_per_review
    return stats.report(decisions, reviews, start, end, group_by, minutes, flags, queues)


@router.get("/tasks/{task_id}", tags=["tasks"], responses=links.TASK_READ)
async def get_task(task_id: TaskIdParam, who: TaskReader, store: Store) -> dict[str, Any]:
    """A task and its decision: producers, admins and auditors read any; a reviewer one whose
    review they may see (404 for any other)."""
    row, review = await store.task(task_id, who, utcnow())
    return {
        "task_id": row["task_id"],
        "task_type": row["task_type"],
        "status": row["status"],
        "submitted_at": row["submitted_at"],
        "decided_at": row["decided_at"],
        # A blind review's reader sees no decision (the model's, for a QA sample) until
        # they recorded their first look.
        "decision": None if _blind_to(review) else row["decision"],
        "review": None
        if review is None
        else {"review_id": review["review_id"], "status": review["status"]},
    }


def _blind_to(review: RowMapping | None) -> bool:
    return review is not None and review["routed"].get("blind", False) and not review["revealed"]


@router.post(
    "/tasks",
    status_code=202,
    response_model=Accepted,
    tags=["tasks"],
    responses={
        202: links.SUBMITTED,
        200: {"model": Accepted, "description": "A known task id: nothing is done."}
        | links.SUBMITTED,
    },
)
async def submit_task(
    body: TaskIn, who: Producer, reviews: Reviews, response: Response
) -> Accepted:
    """HTTP ingress for producers that do not speak Kafka; a known task id is a no-op. The task
    is accepted once the database has it: it reaches Kafka from the outbox, also after an
    outage of the broker. Location names where to follow it."""
    if not (_finite(body.features) and _finite(body.context)):
        raise Unprocessable("features and context hold finite numbers only: JSON has no NaN")
    response.headers["Location"] = f"/v1/tasks/{quote(body.task_id, safe='')}"
    if not await reviews.submit(body):
        response.status_code = 200
        return Accepted(task_id=body.task_id, status="already_submitted")
    return Accepted(task_id=body.task_id, status="accepted")


def _finite(value: object) -> bool:
    """Whether every number in a JSON value is finite: Python's parser takes NaN, Infinity and
    1e999 (as infinity), which no JSON reader downstream would."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True
