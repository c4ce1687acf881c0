"""Routing policies: a versioned, declarative document per deployment, and the pure decision.

A policy is data validated by the models below (no code, no eval). ``decide`` turns one scored
task into a ``Routing``; it is a pure function of the policy, the scored event and ``now``, so a
replay under the same policy version routes every task the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from tandem_shared.events import FeatureValue, PolicyRef, TaskScored, TaskSubmitted

from tandem_policy.columns import Bound, ColumnRules, Member

ReasonCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# Segments: a few attributes at most, each value a label on metrics; a task without the
# attribute in its context is in NO_SEGMENT (context values cannot begin with a parenthesis
# when they are JSON, and text that does is the producer's own choice).
MAX_SEGMENT_ATTRIBUTES = 5
NO_SEGMENT = "(none)"
Confidence = Annotated[float, Field(ge=0.0, le=1.0)]
Duration = Annotated[
    timedelta,
    Field(gt=timedelta(0)),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "duration", "description": "ISO 8601, e.g. PT4H"},
                {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
            ]
        }
    ),
]

Route = Literal["auto", "review", "escalate"]
Fired = tuple[int, ...]  # positions of the rules that hold for a task
BudgetScope = tuple[str, str | None]  # task type, and "attribute=value" where kept per segment
Test = Callable[[dict[str, FeatureValue], dict[str, Any]], bool]
_ORDER: dict[str, Callable[[float, float], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
Comparison = Literal["gt", "ge", "lt", "le", "eq", "ne", "in", "not_in"]

BUILT_IN_REASONS = frozenset(
    {
        "confident",
        "qa_sample",
        "kill_switch",
        "critical",
        "data_quality",
        "very_low_confidence",
        "unknown_outcome",
        "outcome_not_automatic",
        "low_confidence",
        "no_policy_for_task_type",
        "drift_alarm",
        "control_unreadable",
        "error_budget",
        "segment_not_calibrated",
    }
)

# Used for task types the policy does not name: people decide, on the usual terms.
FALLBACK_PRIORITY = 50
FALLBACK_DUE = timedelta(hours=4)
FALLBACK_CRITICAL_APPROVALS = 2


class _Strict(BaseModel):
    # A misspelt key must fail loudly, never fall back to a default silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """A test of one feature or context value, or ``all``/``any`` of nested conditions."""

    feature: str | None = Field(default=None, description="a feature of the task")
    context: str | None = Field(default=None, description="a top-level key of the task context")
    op: Comparison | None = None
    value: FeatureValue | list[FeatureValue] = None
    all: list[Condition] | None = Field(default=None, description="every one of these holds")
    any: list[Condition] | None = Field(default=None, description="at least one of these holds")

    @model_validator(mode="after")
    def _check(self) -> Condition:
        combined = [k for k in ("all", "any") if getattr(self, k) is not None]
        leaf = self.feature is not None or self.context is not None or self.op is not None
        if len(combined) + leaf != 1:
            raise ValueError("a condition is one of: feature/context with op and value, all, any")
        if combined:
            if not getattr(self, combined[0]):
                raise ValueError(f"'{combined[0]}' needs at least one condition")
            return self
        if (self.feature is None) == (self.context is None):
            raise ValueError("a condition names exactly one of 'feature' or 'context'")
        if self.op is None or self.value is None:
            # A missing value never matches, so null would make a rule that never applies.
            raise ValueError("a condition on a value needs 'op' and 'value' (not null)")
        wants_list = self.op in ("in", "not_in")
        if wants_list != isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs {'a list' if wants_list else 'a single value'}")
        if self.op in ("gt", "ge", "lt", "le") and not _is_number(self.value):
            raise ValueError(f"op {self.op!r} compares numbers; value must be a number")
        return self

    def matches(self, features: dict[str, FeatureValue], context: dict[str, Any]) -> bool:
        return self.test(features, context)

    @cached_property
    def bound(self) -> Bound | None:
        """The condition as a comparison of one number with a bound, if it is one."""
        op, value = self.op, self.value
        if op is None or op not in _ORDER or not _is_number(value):
            return None
        on_feature = self.feature is not None
        key = self.feature if on_feature else self.context
        return Bound(on_feature, key or "", op, float(value))

    @cached_property
    def column(self) -> Bound | Member | None:
        """The condition as ColumnRules tests it over a batch: a comparison with a bound, a
        membership, or None (``all``/``any``: tested task by task)."""
        if self.bound is not None:
            return self.bound
        if self.op in ("eq", "ne", "in", "not_in"):
            values = self.value if isinstance(self.value, list) else [self.value]
            on_feature = self.feature is not None
            key = self.feature if on_feature else self.context
            return Member(on_feature, key or "", tuple(values), self.op in ("eq", "in"))
        return None

    @cached_property
    def test(self) -> Test:
        """The condition as one function, built once: a policy's rules run for every task."""
        if self.all is not None:
            parts = [c.test for c in self.all]
            return lambda f, c: all(p(f, c) for p in parts)
        if self.any is not None:
            parts = [c.test for c in self.any]
            return lambda f, c: any(p(f, c) for p in parts)
        on_feature, key = self.feature is not None, self.feature or self.context or ""
        value, op = self.value, self.op
        if op in ("gt", "ge", "lt", "le"):
            compare, bound = _ORDER[op], float(value)  # type: ignore[arg-type]

            def ordered(f: dict[str, FeatureValue], c: dict[str, Any]) -> bool:
                actual = (f if on_feature else c).get(key)
                # Missing, non-numeric and non-finite values never match: that is the quality
                # check's business. Exact type tests: a bool is not a number here.
                if type(actual) is float:
                    return -math.inf < actual < math.inf and compare(actual, bound)
                return type(actual) is int and compare(actual, bound)

            return ordered
        values = value if isinstance(value, list) else [value]
        member = op in ("eq", "in")

        def equal(f: dict[str, FeatureValue], c: dict[str, Any]) -> bool:
            actual = (f if on_feature else c).get(key)
            return actual is not None and (actual in values) == member

        return equal


class Rule(Condition):
    """A condition that takes the task away from automation, with the reason people see."""

    reason: ReasonCode = Field(description="the reason code reviewers and metrics see")
    route: Literal["review", "escalate"] = "review"
    blind: bool = Field(
        default=False,
        description="a review this rule sends is blind: people give their verdict before "
        "they see the model's",
    )
    queue: Name | None = Field(
        default=None,
        description="the named queue a review this rule sends goes to (the first such rule "
        "that holds wins): only people qualified for it take it",
    )

    @model_validator(mode="after")
    def _reserved(self) -> Rule:
        if self.reason in BUILT_IN_REASONS:
            raise ValueError(f"reason {self.reason!r} is reserved for the router's own reasons")
        return self


class Overdue(_Strict):
    """What happens to a review that is still open at its due time."""

    action: Literal["escalate", "pending", "fallback"] = Field(
        default="escalate",
        description="escalate to a senior, stay pending (counted as a breach), or decide "
        "the fallback outcome (never for a critical task: it escalates)",
    )
    outcome: str | None = Field(default=None, description="the fallback outcome")

    @model_validator(mode="after")
    def _check(self) -> Overdue:
        if (self.action == "fallback") != (self.outcome is not None):
            raise ValueError("'outcome' is needed with action fallback, and only then")
        return self


class QueueLevels(_Strict):
    """A named queue's own service levels: they replace the task type's for every review the
    queue gets (a senior queue may have an hour where the general one has a day)."""

    review_due: Duration | None = Field(
        default=None, description="how long its reviews may wait; none: the task type's"
    )
    overdue: Overdue | None = Field(
        default=None, description="what happens to its overdue reviews; none: the task type's"
    )


class Blind(_Strict):
    """Which reviews are blind: the reviewer records a verdict from the features and context
    alone, and only then sees the model's outcome, confidence and explanation."""

    reviews: bool = Field(default=False, description="every review of the task type")
    reasons: list[ReasonCode] = Field(
        default_factory=list, description="reviews routed for any of these reasons"
    )
    qa_samples: bool = Field(default=False, description="the QA sample's reviews")

    def applies(self, reasons: Sequence[str]) -> bool:
        """Whether a review routed for ``reasons`` (a QA sample's: "qa_sample") is blind."""
        if self.reviews or (self.qa_samples and "qa_sample" in reasons):
            return True
        return any(r in self.reasons for r in reasons)


class Calibrated(_Strict):
    """The evidence a calibration left beside the thresholds it wrote (tandem_policy.budget)."""

    threshold: Confidence
    cases: Annotated[int, Field(ge=1, description="labelled cases the tests ran on")]
    automated: Annotated[int, Field(ge=1, description="of them at or above the threshold")]
    errors: Annotated[int, Field(ge=0)]
    upper_bound: Confidence = Field(
        description="the automated error rate's bound (Clopper-Pearson)"
    )
    automation_rate: Confidence = Field(description="expected: on the cases calibrated on")
    data: Annotated[str, StringConstraints(max_length=500)] = Field(
        description="where the labelled cases came from"
    )
    at: datetime


class ErrorBudget(_Strict):
    """At most ``max_error`` of the task type's automatic decisions may be wrong, promised at
    ``confidence``: ``tandem policy calibrate`` sets the thresholds that keep it, and the live
    watch bounds the error QA samples show against it."""

    max_error: Annotated[float, Field(gt=0, le=0.5)]
    confidence: Annotated[float, Field(ge=0.5, le=0.999)] = 0.95
    on_breach: Literal["review", "escalate", "ignore"] = Field(
        default="review",
        description="what the live watch's breach does to the task type's automatic decisions",
    )
    calibrated: Calibrated | None = None
    per_segment: Name | None = Field(
        default=None,
        description="a segment attribute of the policy: the budget is kept within each of its "
        "values, each with a threshold of its own (calibrate writes them under 'segments')",
    )
    segments: dict[Annotated[str, StringConstraints(max_length=64)], Calibrated] = Field(
        default_factory=dict,
        description="per value of per_segment, the calibrated threshold and its evidence; once "
        "there are any, a task of a value without one goes to people",
    )

    @model_validator(mode="after")
    def _check(self) -> ErrorBudget:
        if self.segments and self.per_segment is None:
            raise ValueError("'segments' are thresholds per value of 'per_segment': name it")
        return self

    @property
    def segmented(self) -> str | None:
        """The attribute whose values have thresholds of their own, once calibrated."""
        return self.per_segment if self.segments else None


class TaskTypePolicy(_Strict):
    outcomes: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        min_length=1, description="what a reviewer may decide"
    )
    auto: dict[str, Confidence] = Field(
        default_factory=dict,
        description="minimum model confidence to decide automatically, per outcome; "
        "an outcome absent here is never decided automatically",
    )
    escalate_below: Confidence | None = Field(
        default=None, description="confidence under which the task goes straight to escalation"
    )
    critical_approvals: Annotated[int, Field(ge=1, le=5)] = 2
    qa_sample_rate: Confidence = Field(
        default=0.0, description="share of automatic decisions also sent to review"
    )
    review_priority: Annotated[int, Field(ge=0, le=100)] = 50
    review_due: Duration = Field(default=timedelta(hours=4))
    quality_flags: Literal["review", "escalate", "ignore"] = "review"
    drift: Literal["review", "escalate", "ignore"] = Field(
        default="review", description="what a drift alarm on the scoring model does"
    )
    overdue: Overdue = Field(default_factory=Overdue)
    blind: Blind = Field(default_factory=Blind)
    queue: Name | None = Field(
        default=None,
        description="the named queue the task type's reviews go to (unless a rule names "
        "another); none: the general queue, which every reviewer takes from",
    )
    rules: list[Rule] = Field(default_factory=list)
    error_budget: ErrorBudget | None = None

    @cached_property
    def checks(self) -> tuple[tuple[str, bool, bool, str | None], ...]:
        """Each rule as (reason, escalates, blind, queue), read once for every task routed."""
        return tuple((r.reason, r.route == "escalate", r.blind, r.queue) for r in self.rules)

    @property
    def named_queues(self) -> set[str]:
        """The named queues its reviews may go to."""
        return {q for q in (self.queue, *(r.queue for r in self.rules)) if q is not None}

    @cached_property
    def columns(self) -> ColumnRules:
        """The rules, to test a batch of tasks at once."""
        return ColumnRules([(r.column, r.test) for r in self.rules])

    @model_validator(mode="after")
    def _check(self) -> TaskTypePolicy:
        if len(set(self.outcomes)) != len(self.outcomes):
            raise ValueError("outcomes must not repeat")
        unknown = sorted(set(self.auto) - set(self.outcomes))
        if unknown:
            raise ValueError(f"auto outcomes {unknown} are not in outcomes {self.outcomes}")
        fallback = self.overdue.outcome
        if fallback is not None and fallback not in self.outcomes:
            raise ValueError(f"overdue outcome {fallback!r} is not in outcomes {self.outcomes}")
        calibrated = self.error_budget.calibrated if self.error_budget else None
        if calibrated is not None:
            looser = sorted(o for o, c in self.auto.items() if c < calibrated.threshold)
            if looser:
                raise ValueError(
                    f"auto thresholds of {looser} are below the calibrated "
                    f"{calibrated.threshold}: the error budget would not hold; calibrate again"
                )
        return self


class Policy(_Strict):
    name: Name
    version: Annotated[int, Field(ge=1)]
    description: str = ""
    task_types: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], TaskTypePolicy]
    queues: dict[Name, QueueLevels] = Field(
        default_factory=dict,
        description="service levels of named queues (those task types and rules send to)",
    )
    segments: list[Name] = Field(
        default_factory=list,
        max_length=MAX_SEGMENT_ATTRIBUTES,
        description="context fields whose values split the outcome stats into segments "
        "(clinic, region; protected attributes only where the deployment may use them)",
    )

    @model_validator(mode="after")
    def _budget_segments(self) -> Policy:
        for task_type, rules in self.task_types.items():
            attribute = rules.error_budget.per_segment if rules.error_budget else None
            if attribute is not None and attribute not in self.segments:
                raise ValueError(
                    f"task type {task_type!r}: error budget per_segment {attribute!r} is not "
                    f"one of the policy's segments {self.segments}"
                )
        return self

    @model_validator(mode="after")
    def _queues(self) -> Policy:
        sent = {
            queue: [t for t, rules in self.task_types.items() if queue in rules.named_queues]
            for queue in self.queues
        }
        unused = sorted(q for q, task_types in sent.items() if not task_types)
        if unused:
            raise ValueError(f"queues {unused} get no reviews: no task type or rule names them")
        for queue, levels in self.queues.items():
            fallback = levels.overdue.outcome if levels.overdue else None
            for task_type in sent[queue] if fallback is not None else ():
                if fallback not in self.task_types[task_type].outcomes:
                    raise ValueError(
                        f"queue {queue!r}: overdue outcome {fallback!r} is not an outcome of "
                        f"task type {task_type!r}, which sends reviews to it"
                    )
        return self

    @cached_property
    def ref(self) -> PolicyRef:
        return PolicyRef(name=self.name, version=self.version)

    def segment_of(self, task: TaskSubmitted) -> dict[str, str]:
        """The task's segment: each segment attribute's value in its context, as text."""
        return {name: segment_value(task.context.get(name)) for name in self.segments}

    def budget_scope(self, task: TaskSubmitted) -> BudgetScope:
        """Which error budget the task's automatic decision counts against: its task type's,
        or, where the budget is kept per segment, its segment's (as ``attribute=value``)."""
        rules = self.task_types.get(task.task_type)
        attribute = rules.error_budget.segmented if rules and rules.error_budget else None
        if attribute is None:
            return task.task_type, None
        return task.task_type, f"{attribute}={segment_value(task.context.get(attribute))}"

    def fired(self, tasks: Sequence[TaskSubmitted]) -> list[Fired | None]:
        """For each task, which of its task type's rules hold (positions in the policy), or
        None for a task type the policy does not name: what ``decide`` would find, for a
        whole batch at once."""
        out: list[Fired | None] = [None] * len(tasks)
        by_type: dict[str, list[int]] = {}
        for row, task in enumerate(tasks):
            by_type.setdefault(task.task_type, []).append(row)
        for task_type, rows in by_type.items():
            rules = self.task_types.get(task_type)
            if rules is None:
                continue
            values = [(tasks[row].features, tasks[row].context) for row in rows]
            for row, fired in zip(rows, rules.columns.fired(values), strict=True):
                out[row] = fired
        return out


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document, for editors and CI checks."""
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Tandem routing policy"
    return schema


_ESCALATE_WHEN_OVERDUE = Overdue()


@dataclass(slots=True)  # made for every task: not frozen, like Event
class Routing:
    """Where one task goes, and why. ``outcome`` is the model's proposal (the decision if auto)."""

    route: Route
    outcome: str
    reasons: tuple[str, ...]
    policy: PolicyRef
    outcomes: tuple[str, ...]
    required_approvals: int
    review_priority: int
    routed_at: datetime
    due_at: datetime
    qa_sample: bool = False
    overdue: Overdue = _ESCALATE_WHEN_OVERDUE
    blind: bool = False  # the review it makes (for an automatic one, its QA sample's) is blind
    queue: str | None = None  # the named queue of that review; None: the general one
    segment: Mapping[str, str] = field(default_factory=dict)  # Policy.segment_of the task


def segment_value(value: object) -> str:
    """A context value as a segment names it: text as it is, anything else as JSON, cut to 64
    characters; NO_SEGMENT where the task has none."""
    if value is None:
        return NO_SEGMENT
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:64]


def qa_bucket(task_id: str) -> float:
    """A stable number in [0, 1) per task id: the same task is sampled the same way every time."""
    digest = hashlib.sha256(task_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def decide(
    policy: Policy,
    scored: TaskScored,
    now: datetime,
    *,
    kill_switch: bool = False,
    drifting: bool = False,
    control_unreadable: bool = False,
    budget_breached: bool = False,
    fired: Fired | None = None,
) -> Routing:
    """Where the task goes. ``kill_switch``: automation is off for its task type; ``drifting``:
    the model that scored it has a drift alarm; ``control_unreadable``: the router cannot tell
    whether either holds, so it does not guess; ``budget_breached``: the live watch says the
    error budget the task counts against (``Policy.budget_scope``) no longer shows (its
    ``on_breach`` says what follows).
    ``fired``: which rules hold, if already known for the whole batch (``Policy.fired``); the
    same as testing them here."""
    task, score = scored.task, scored.score
    rules = policy.task_types.get(task.task_type)
    if rules is None:
        return Routing(
            route="review",
            outcome=score.prediction,
            reasons=("no_policy_for_task_type",) + (("critical",) if task.critical else ()),
            policy=policy.ref,
            outcomes=tuple(sorted(score.probabilities) or [score.prediction]),
            required_approvals=FALLBACK_CRITICAL_APPROVALS if task.critical else 1,
            review_priority=max(FALLBACK_PRIORITY, task.priority),
            routed_at=now,
            due_at=now + FALLBACK_DUE,
            segment=policy.segment_of(task),
        )

    reasons: list[str] = []
    escalate = False
    if kill_switch:
        reasons.append("kill_switch")
    if control_unreadable:
        reasons.append("control_unreadable")
    if task.critical:
        reasons.append("critical")
    if score.quality_flags and rules.quality_flags != "ignore":
        reasons.append("data_quality")
        escalate |= rules.quality_flags == "escalate"
    if drifting and rules.drift != "ignore":
        reasons.append("drift_alarm")
        escalate |= rules.drift == "escalate"
    budget = rules.error_budget
    breach = budget.on_breach if budget else "ignore"
    if budget_breached and breach != "ignore":
        reasons.append("error_budget")
        escalate |= breach == "escalate"
    if fired is None:
        fired = rules.columns.one(task.features, task.context)
    blind_rule, queue = False, None
    for index in fired:
        reason, escalates, blinds, rule_queue = rules.checks[index]
        reasons.append(reason)
        escalate |= escalates
        blind_rule |= blinds
        queue = queue or rule_queue
    if rules.escalate_below is not None and score.confidence < rules.escalate_below:
        reasons.append("very_low_confidence")
        escalate = True
    threshold = rules.auto.get(score.prediction)
    segment = policy.segment_of(task)
    if threshold is not None and budget is not None and budget.segmented is not None:
        # Kept per segment: each value's own calibrated threshold, none without one.
        kept = budget.segments.get(segment[budget.segmented])
        if kept is None:
            reasons.append("segment_not_calibrated")
        else:
            threshold = max(threshold, kept.threshold)
    if score.prediction not in rules.outcomes:
        reasons.append("unknown_outcome")
    elif threshold is None:
        reasons.append("outcome_not_automatic")
    elif score.confidence < threshold:
        reasons.append("low_confidence")

    route: Route = ("escalate" if escalate else "review") if reasons else "auto"
    qa = route == "auto" and qa_bucket(task.task_id) < rules.qa_sample_rate
    queue = queue or rules.queue
    levels = policy.queues.get(queue) if queue is not None else None
    due, overdue = rules.review_due, rules.overdue
    if levels is not None:
        due, overdue = levels.review_due or due, levels.overdue or overdue
    return Routing(
        route=route,
        outcome=score.prediction,
        reasons=tuple(dict.fromkeys(reasons)) if reasons else ("confident",),
        policy=policy.ref,
        outcomes=tuple(rules.outcomes),
        required_approvals=rules.critical_approvals if task.critical else 1,
        review_priority=max(rules.review_priority, task.priority),
        routed_at=now,
        due_at=now + due,
        qa_sample=qa,
        # A critical task is never decided without people: overdue, it goes to a senior.
        overdue=Overdue() if task.critical and overdue.action == "fallback" else overdue,
        blind=blind_rule or rules.blind.applies(("qa_sample",) if qa else reasons),
        queue=queue,
        segment=segment,
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
