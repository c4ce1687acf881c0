"""What-if: a window of scored tasks routed under the active and a proposed policy, side by side.

Pure: no Kafka, no HTTP, no clock. Each task is routed with ``decide(policy, scored,
now=scored.scored_at)``, as the router routes it, so the numbers are those the router would
produce. Human outcomes known for the window measure how often automatic decisions are right,
and a simulated review queue estimates how many reviews would miss their due time. For a task
type with an error budget, labelled cases (given) calibrate the threshold of each budget of a
range, and the window routed at each shows what it would cost: the curve an owner chooses on.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field
from tandem_shared.events import PolicyRef, TaskScored

from tandem_policy.budget_cost import BudgetCurve, CasesFor, budget_curves
from tandem_policy.policy import Policy, Route, Routing
from tandem_policy.routed import Routed, reviewed, route_all, share

HOUR = timedelta(hours=1)


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Accuracy(_Report):
    """Automatic decisions checked against the outcome a human decided for the same task."""

    labelled: int = Field(description="automatic decisions with a human outcome")
    correct: int = Field(description="of those, the ones where the model's outcome matches")
    accuracy: float | None = Field(description="correct / labelled; null when nothing is labelled")


class ReviewLoad(_Report):
    """Review items (reviews, escalations and QA samples) per hour of routed time."""

    mean_per_hour: float = Field(description="over every hour of the window, empty ones too")
    peak_per_hour: int
    peak_hour: datetime | None = Field(description="the first busiest hour; null without reviews")


class SlaRisk(_Report):
    """Review items that would be finished after their due time at the assumed capacity."""

    late: int
    late_share: float = Field(description="late / review items; 0 without review items")


class Side(_Report):
    """What one policy does with the window."""

    policy: PolicyRef
    tasks: int
    automatic: int
    automation_rate: float
    qa_samples: int = Field(description="automatic decisions also sent to review")
    reviews: int = Field(description="tasks routed to review, QA samples not included")
    escalations: int
    accuracy: Accuracy
    review_load: ReviewLoad
    sla: SlaRisk


class Placement(_Report):
    """Where one policy sends one task."""

    route: Route
    reasons: tuple[str, ...]


class Change(_Report):
    """A task the two policies route differently."""

    task_id: str
    task_type: str
    active: Placement
    proposed: Placement


class WhatIf(_Report):
    """The active and the proposed policy over the same scored tasks."""

    active: Side
    proposed: Side
    hours: int = Field(description="hours of the window, from the first scored hour to the last")
    reviews_per_hour: float = Field(description="review capacity assumed for the SLA estimate")
    changed: list[Change] = Field(description="tasks routed differently, by task id, capped")
    changed_total: int = Field(description="how many tasks are routed differently in all")
    budgets: list[BudgetCurve] = Field(
        default_factory=list,
        description="per task type of the proposed policy with an error budget (and labelled "
        "cases to calibrate on): automation and review load against the budget",
    )


def compare(
    active: Policy,
    proposed: Policy,
    scored: Sequence[TaskScored],
    labels: Mapping[str, str],
    reviews_per_hour: float,
    *,
    limit: int = 1000,
    cases_for: CasesFor | None = None,
) -> WhatIf:
    """Route ``scored`` under both policies; ``labels`` maps task id to the human outcome;
    ``cases_for`` gives the labelled cases the budget curves are calibrated on."""
    if not (math.isfinite(reviews_per_hour) and reviews_per_hour > 0):
        raise ValueError("reviews_per_hour must be a positive number")
    if limit < 0:
        raise ValueError("limit must not be negative")
    tasks = _unique(scored)
    hours = _window_hours(tasks)
    before, after = route_all(active, tasks), route_all(proposed, tasks)
    changes = _changes(before, after)
    return WhatIf(
        active=_side(active, before, labels, hours, reviews_per_hour),
        proposed=_side(proposed, after, labels, hours, reviews_per_hour),
        hours=hours,
        reviews_per_hour=reviews_per_hour,
        changed=changes[:limit],
        changed_total=len(changes),
        budgets=budget_curves(proposed, tasks, hours, cases_for) if cases_for else [],
    )


def _unique(scored: Sequence[TaskScored]) -> list[TaskScored]:
    # The router routes a task once and drops later copies; the first one is the one it routed.
    first: dict[str, TaskScored] = {}
    for item in scored:
        first.setdefault(item.task.task_id, item)
    return list(first.values())


def _side(
    policy: Policy, routed: Routed, labels: Mapping[str, str], hours: int, reviews_per_hour: float
) -> Side:
    routes = Counter(routing.route for _, routing in routed)
    queue = [routing for _, routing in routed if reviewed(routing)]
    return Side(
        policy=policy.ref,
        tasks=len(routed),
        automatic=routes["auto"],
        automation_rate=share(routes["auto"], len(routed)),
        qa_samples=sum(routing.qa_sample for _, routing in routed),
        reviews=routes["review"],
        escalations=routes["escalate"],
        accuracy=_accuracy(routed, labels),
        review_load=_review_load(queue, hours),
        sla=_sla(queue, reviews_per_hour),
    )


def _accuracy(routed: Routed, labels: Mapping[str, str]) -> Accuracy:
    checked = [
        routing.outcome == labels[task.task.task_id]
        for task, routing in routed
        if routing.route == "auto" and task.task.task_id in labels
    ]
    return Accuracy(
        labelled=len(checked),
        correct=sum(checked),
        accuracy=sum(checked) / len(checked) if checked else None,
    )


def _review_load(queue: Sequence[Routing], hours: int) -> ReviewLoad:
    per_hour = Counter(_hour(routing.routed_at) for routing in queue)
    peak = max(per_hour.values(), default=0)
    return ReviewLoad(
        mean_per_hour=share(len(queue), hours),
        peak_per_hour=peak,
        peak_hour=min((hour for hour, n in per_hour.items() if n == peak), default=None),
    )


def _window_hours(tasks: Sequence[TaskScored]) -> int:
    if not tasks:
        return 0
    hours = [_hour(task.scored_at) for task in tasks]
    return (max(hours) - min(hours)) // HOUR + 1


def _hour(at: datetime) -> datetime:
    # Hours are counted in UTC so that offsets such as +05:30 do not shift the buckets.
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.replace(minute=0, second=0, microsecond=0)


class _Review(NamedTuple):
    """A review item in seconds since the epoch, as the queue simulation needs it."""

    arrives: float
    priority: int
    due: float

    @classmethod
    def of(cls, routing: Routing) -> _Review:
        return cls(
            routing.routed_at.timestamp(), routing.review_priority, routing.due_at.timestamp()
        )


def _sla(queue: Sequence[Routing], reviews_per_hour: float) -> SlaRisk:
    late = _late([_Review.of(routing) for routing in queue], 3600 / reviews_per_hour)
    return SlaRisk(late=late, late_share=share(late, len(queue)))


def _late(reviews: Sequence[_Review], service_seconds: float) -> int:
    """One reviewer at the capacity's pace, starting with an empty queue."""
    arrivals = sorted(reviews, key=lambda review: review.arrives)
    # Serving order: higher priority, then earlier due, then earlier arrival.
    waiting: list[tuple[int, float, int]] = []
    clock, late, next_arrival = -math.inf, 0, 0
    while next_arrival < len(arrivals) or waiting:
        if not waiting:
            clock = max(clock, arrivals[next_arrival].arrives)
        while next_arrival < len(arrivals) and arrivals[next_arrival].arrives <= clock:
            review = arrivals[next_arrival]
            heapq.heappush(waiting, (-review.priority, review.due, next_arrival))
            next_arrival += 1
        _, due, _ = heapq.heappop(waiting)
        clock += service_seconds
        late += clock > due
    return late


def _changes(before: Routed, after: Routed) -> list[Change]:
    changes = [
        Change(
            task_id=task.task.task_id,
            task_type=task.task.task_type,
            active=_placement(old),
            proposed=_placement(new),
        )
        for (task, old), (_, new) in zip(before, after, strict=True)
        if old.route != new.route
    ]
    return sorted(changes, key=lambda change: change.task_id)


def _placement(routing: Routing) -> Placement:
    return Placement(route=routing.route, reasons=routing.reasons)
