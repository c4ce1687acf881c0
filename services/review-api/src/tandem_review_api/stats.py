"""Outcomes and value, computed from what the review API holds: decisions (the model's and
people's), reviews and approvals. Pure: rows in, a report out, grouped as asked."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar

import numpy as np
from pydantic import BaseModel
from tandem_shared.events import DecisionMade, ModelRef
from tandem_shared.fairness import Gap, wilson

from tandem_review_api.agreement import Agreement, Judged, agreement

GroupBy = Literal["task_type", "model", "policy", "day", "queue", "segment", "none"]
T = TypeVar("T")
# Grouped by queue: reviews of the general queue, and decisions that had no review at all
# (queue names cannot begin with a parenthesis).
GENERAL_QUEUE = "(general)"
NO_REVIEW = "(no review)"


@dataclass(frozen=True)
class ReviewFacts:
    """One review as the report needs it."""

    task_type: str
    model: str
    policy: str
    qa_sample: bool
    prediction: str
    outcome: str | None  # what people decided, once decided
    approvals: tuple[str, ...]  # the outcomes each approver gave, in order
    breached: bool
    created_at: datetime
    # On a blind review, each approver's verdict before the reveal and their approval after.
    first_looks: tuple[BlindVerdict, ...] = ()
    # Each approver's time on task, where it was measured (claim and heartbeats).
    active_seconds: tuple[float, ...] = ()
    # What approvers said of the model on this case, where they said anything.
    ratings: tuple[Rated, ...] = ()
    approvers: tuple[str, ...] = ()  # who gave each of ``approvals``, in the same order
    queue: str | None = None  # the named queue it went to; None: the general queue
    segment: Mapping[str, str] = field(default_factory=dict)  # the task's, as routed
    confidence: float | None = None  # the model's, in its prediction


@dataclass(frozen=True)
class Rated:
    explanation_useful: int | None
    trust: int | None
    noted: bool


@dataclass(frozen=True)
class Flagged:
    """A case flagged for the owners, as the report counts it."""

    task_type: str
    model: str
    kind: str


@dataclass(frozen=True)
class BlindVerdict:
    reviewer: str
    before: str
    after: str


class Latency(BaseModel):
    p50: float | None
    p90: float | None
    p99: float | None


# The rates a segment is compared with the whole on.
COMPARED = ("automation_rate", "override_rate", "qa_accuracy")


class Group(BaseModel):
    key: str
    decisions: int
    automatic: int
    by_people: int
    by_policy_fallback: int
    automation_rate: float | None
    override_rate: float | None  # of people's decisions, those against the model
    reviewer_agreement: float | None  # of reviews with several approvers, those all agreeing
    qa_samples_reviewed: int
    qa_accuracy: float | None  # automatic decisions people checked and agreed with
    qa_accuracy_interval: tuple[float, float] | None  # Wilson, 95%
    sla_breaches: int
    seconds_to_decision: dict[str, Latency]  # all, automatic, people
    # Automatic decisions times a person's time per review: the mean measured time on task
    # of the group's approvals, or minutes_per_review where none was measured.
    reviewer_hours_saved: float
    minutes_per_review: float
    minutes_per_review_measured_from: int  # approvals whose time on task was measured
    # Grouped by segment: each of COMPARED against the whole report's.
    disparity: dict[str, Gap] = {}


class BlindAgreement(BaseModel):
    """Blind reviews of one reviewer, task type and model version: how often the verdict
    agreed with the model before its view was shown and after, and how often people changed
    their verdict to the model's once they saw it (an automation-bias indicator)."""

    reviewer: str
    task_type: str
    model: str
    first_looks: int  # approvals given after a blind first look
    agreement_before_reveal: float | None
    agreement_after_reveal: float | None
    changed_after_reveal: float | None  # of all first looks, those the approval changed
    switched_to_model: int  # disagreed with the model blind, approved its outcome after
    switched_to_model_rate: float | None  # of the first looks that disagreed with the model


class ReviewerFeedback(BaseModel):
    """What reviewers said of one model version on one task type: how useful its
    explanations were and how much they trusted it (means of 1 to 5), notes, and flags."""

    task_type: str
    model: str
    rated: int  # approvals that rated or noted anything
    explanation_useful: float | None
    trust: float | None
    notes: int
    flags: dict[str, int]  # by kind


class Report(BaseModel):
    since: datetime
    until: datetime
    group_by: GroupBy
    minutes_per_review: float
    groups: list[Group]
    overall: Group  # every decision and review of the report as one group
    automation_bias: list[BlindAgreement]
    reviewer_feedback: list[ReviewerFeedback]
    agreement: list[Agreement]  # beyond chance, on the tasks several people judged


def report(
    decisions: Sequence[DecisionMade],
    reviews: Sequence[ReviewFacts],
    since: datetime,
    until: datetime,
    group_by: GroupBy,
    minutes_per_review: float,
    flags: Sequence[Flagged] = (),
    queues: Mapping[str, str | None] | None = None,
) -> Report:
    """``queues``: by task id, the queue of the decisions' reviews (a decision whose task
    had no review is absent); only grouping by queue reads it."""
    overall, groups = grouped(decisions, reviews, group_by, minutes_per_review, queues)
    return Report(
        since=since,
        until=until,
        group_by=group_by,
        minutes_per_review=minutes_per_review,
        groups=groups,
        overall=overall,
        automation_bias=automation_bias(reviews),
        reviewer_feedback=reviewer_feedback(reviews, flags),
        agreement=agreement(
            Judged(r.task_type, tuple(zip(r.approvers, r.approvals, strict=True))) for r in reviews
        ),
    )


def grouped(
    decisions: Sequence[DecisionMade],
    reviews: Sequence[ReviewFacts],
    group_by: GroupBy,
    minutes_per_review: float,
    queues: Mapping[str, str | None] | None = None,
) -> tuple[Group, list[Group]]:
    """The whole, and its groups; by segment, each with its disparity against the whole."""
    keyed_decisions = _grouped(decisions, _decision_keys(group_by, queues or {}))
    keyed_reviews = _grouped(reviews, _review_keys(group_by))
    keys = sorted(set(keyed_decisions) | set(keyed_reviews))
    groups = [
        _group(key, keyed_decisions.get(key, []), keyed_reviews.get(key, []), minutes_per_review)
        for key in keys
    ]
    overall = _group("all", list(decisions), list(reviews), minutes_per_review)
    if group_by == "segment":
        groups = [g.model_copy(update={"disparity": disparity(g, overall)}) for g in groups]
    return overall, groups


def disparity(segment: Group, whole: Group) -> dict[str, Gap]:
    """Each compared rate of the segment against the whole's."""
    return {m: Gap.of(getattr(segment, m), getattr(whole, m)) for m in COMPARED}


def reviewer_feedback(
    reviews: Iterable[ReviewFacts], flags: Iterable[Flagged]
) -> list[ReviewerFeedback]:
    """Ratings, notes and flags by task type and model version, in that order."""
    rated: dict[tuple[str, str], list[Rated]] = defaultdict(list)
    for r in reviews:
        rated[(r.task_type, r.model)].extend(r.ratings)
    flagged: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in flags:
        flagged[(f.task_type, f.model)][f.kind] += 1
    keys = sorted({k for k, v in rated.items() if v} | set(flagged))
    return [_feedback(key, rated.get(key, []), dict(flagged.get(key, {}))) for key in keys]


def _feedback(key: tuple[str, str], rated: list[Rated], flags: dict[str, int]) -> ReviewerFeedback:
    useful = [r.explanation_useful for r in rated if r.explanation_useful is not None]
    trust = [r.trust for r in rated if r.trust is not None]
    return ReviewerFeedback(
        task_type=key[0],
        model=key[1],
        rated=len(rated),
        explanation_useful=round(sum(useful) / len(useful), 2) if useful else None,
        trust=round(sum(trust) / len(trust), 2) if trust else None,
        notes=sum(r.noted for r in rated),
        flags=flags,
    )


def automation_bias(reviews: Iterable[ReviewFacts]) -> list[BlindAgreement]:
    """Blind verdicts by reviewer, task type and model version, in that order."""
    cells: dict[tuple[str, str, str], list[tuple[BlindVerdict, str]]] = defaultdict(list)
    for r in reviews:
        for v in r.first_looks:
            cells[(v.reviewer, r.task_type, r.model)].append((v, r.prediction))
    return [_blind(key, cells[key]) for key in sorted(cells)]


def _blind(key: tuple[str, str, str], verdicts: list[tuple[BlindVerdict, str]]) -> BlindAgreement:
    disagreed = [(v, model) for v, model in verdicts if v.before != model]
    switched = sum(v.after == model for v, model in disagreed)
    return BlindAgreement(
        reviewer=key[0],
        task_type=key[1],
        model=key[2],
        first_looks=len(verdicts),
        agreement_before_reveal=_share(sum(v.before == m for v, m in verdicts), len(verdicts)),
        agreement_after_reveal=_share(sum(v.after == m for v, m in verdicts), len(verdicts)),
        changed_after_reveal=_share(sum(v.after != v.before for v, _ in verdicts), len(verdicts)),
        switched_to_model=switched,
        switched_to_model_rate=_share(switched, len(disagreed)),
    )


def _group(
    key: str, decisions: list[DecisionMade], reviews: list[ReviewFacts], minutes: float
) -> Group:
    automatic = [d for d in decisions if d.decided_by == "model"]
    people = [d for d in decisions if d.decided_by == "human"]
    several = [r for r in reviews if len(r.approvals) > 1]
    qa = [r for r in reviews if r.qa_sample and r.outcome is not None]
    qa_right = sum(r.outcome == r.prediction for r in qa)
    measured = [seconds for r in reviews for seconds in r.active_seconds]
    per_review = sum(measured) / len(measured) / 60 if measured else minutes
    return Group(
        key=key,
        decisions=len(decisions),
        automatic=len(automatic),
        by_people=len(people),
        by_policy_fallback=sum(d.decided_by == "policy" for d in decisions),
        automation_rate=_share(len(automatic), len(decisions)),
        override_rate=_share(sum(d.overrode_model for d in people), len(people)),
        reviewer_agreement=_share(sum(len(set(r.approvals)) == 1 for r in several), len(several)),
        qa_samples_reviewed=len(qa),
        qa_accuracy=_share(qa_right, len(qa)),
        qa_accuracy_interval=wilson(qa_right, len(qa)),
        sla_breaches=sum(r.breached for r in reviews),
        seconds_to_decision={
            "all": _latency(decisions),
            "automatic": _latency(automatic),
            "people": _latency(people),
        },
        reviewer_hours_saved=round(len(automatic) * per_review / 60, 2),
        minutes_per_review=round(per_review, 2),
        minutes_per_review_measured_from=len(measured),
    )


def _latency(decisions: Iterable[DecisionMade]) -> Latency:
    waits = [(d.decided_at - d.submitted_at).total_seconds() for d in decisions]
    if not waits:
        return Latency(p50=None, p90=None, p99=None)
    p50, p90, p99 = (float(v) for v in np.percentile(waits, [50, 90, 99]))
    return Latency(p50=round(p50, 3), p90=round(p90, 3), p99=round(p99, 3))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _grouped(items: Iterable[T], keys: Callable[[T], list[str]]) -> dict[str, list[T]]:
    """By key; an item with several keys (a segment per attribute) is in each group."""
    out: dict[str, list[T]] = defaultdict(list)
    for item in items:
        for key in keys(item):
            out[key].append(item)
    return out


def segment_keys(segment: Mapping[str, str]) -> list[str]:
    """The groups a task's segment puts it in: one per attribute, as attribute=value."""
    return [f"{attribute}={value}" for attribute, value in sorted(segment.items())]


def _decision_keys(
    group_by: GroupBy, queues: Mapping[str, str | None]
) -> Callable[[DecisionMade], list[str]]:
    if group_by == "segment":
        return lambda d: segment_keys(d.segment)
    key = _decision_key(group_by, queues)
    return lambda d: [key(d)]


def _review_keys(group_by: GroupBy) -> Callable[[ReviewFacts], list[str]]:
    if group_by == "segment":
        return lambda r: segment_keys(r.segment)
    key = _review_key(group_by)
    return lambda r: [key(r)]


def _decision_key(
    group_by: GroupBy, queues: Mapping[str, str | None]
) -> Callable[[DecisionMade], str]:
    return {
        "task_type": lambda d: d.task_type,
        "model": lambda d: model_label(d.model),
        "policy": lambda d: f"{d.policy.name} v{d.policy.version}",
        "day": lambda d: _day(d.decided_at),
        "queue": lambda d: queue_label(queues[d.task_id]) if d.task_id in queues else NO_REVIEW,
        "none": lambda d: "all",
    }[group_by]


def _review_key(group_by: GroupBy) -> Callable[[ReviewFacts], str]:
    return {
        "task_type": lambda r: r.task_type,
        "model": lambda r: r.model,
        "policy": lambda r: r.policy,
        "day": lambda r: _day(r.created_at),
        "queue": lambda r: queue_label(r.queue),
        "none": lambda r: "all",
    }[group_by]


def queue_label(queue: str | None) -> str:
    """A queue as the report and the metrics name it: the general queue is GENERAL_QUEUE."""
    return GENERAL_QUEUE if queue is None else queue


def model_label(model: ModelRef) -> str:
    """A model version as the report and the flags name it: name/version."""
    return f"{model.name}/{model.version}"


def _day(at: datetime) -> str:
    return at.date().isoformat()  # UTC days


class Today(BaseModel):
    """A reviewer's own numbers since the start of the day (UTC)."""

    reviewer: str
    since: datetime
    approvals: int  # decisions and approvals given (QA verdicts included)
    agreed_with_model: float | None  # the share that gave the model's outcome
    seconds_per_review: float | None  # mean measured time on task
    flags: int


def today(
    reviewer: str, since: datetime, given: Sequence[tuple[str, str, float | None]], flags: int
) -> Today:
    """``given``: (outcome, the model's prediction, time on task) for each approval."""
    timed = [seconds for _, _, seconds in given if seconds is not None]
    return Today(
        reviewer=reviewer,
        since=since,
        approvals=len(given),
        agreed_with_model=_share(sum(o == p for o, p, _ in given), len(given)),
        seconds_per_review=round(sum(timed) / len(timed), 1) if timed else None,
        flags=flags,
    )
