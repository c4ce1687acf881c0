"""What each error budget would cost: for a task type of a proposed policy with a budget, each
budget of a range calibrated on labelled cases as ``tandem policy calibrate`` does it, and a
window of scored tasks routed at the thresholds found. Kept per segment, each value of the
segment gets its threshold at each budget, all promised together. Pure, like the what-if."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from tandem_shared.events import ModelRef, TaskScored

from tandem_policy.budget import (
    Calibration,
    Case,
    TooFewLabels,
    by_segment,
    calibrate,
    calibrate_segments,
)
from tandem_policy.policy import Calibrated, ErrorBudget, Policy, TaskTypePolicy
from tandem_policy.routed import reviewed, route_all, share

# The budgets of the curve, beside the policy's own.
CURVE = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
# The labelled cases of a task type scored by a model version, each with its value of the
# segment attribute when one is asked for (None: the case has no segment).
CasesFor = Callable[[str, ModelRef, str | None], Sequence[Case]]


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetPoint(_Report):
    """One budget of the curve: its calibrated threshold, and the window routed at it."""

    max_error: float
    threshold: float | None = Field(
        description="null: the cases cannot promise the budget, or it is kept per segment"
    )
    segments: dict[str, float | None] = Field(
        default_factory=dict,
        description="kept per segment: each value's threshold (null: it cannot be promised, "
        "and its tasks go to people)",
    )
    automation_rate: float | None = Field(description="of the task type's tasks in the window")
    review_items_per_hour: float | None = Field(
        description="the task type's reviews, escalations and QA samples, per hour of the window"
    )


class BudgetCurve(_Report):
    """What each error budget would cost a task type of the proposed policy."""

    task_type: str
    model: ModelRef = Field(description="the version that scored most of its window")
    confidence: float = Field(description="the proposed budget's, at which each is promised")
    max_error: float = Field(description="the proposed budget")
    per_segment: str | None = Field(description="the attribute it is kept within each value of")
    cases: int = Field(description="labelled cases calibrated on")
    points: list[BudgetPoint]


def budget_curves(
    policy: Policy, tasks: Sequence[TaskScored], hours: int, cases_for: CasesFor
) -> list[BudgetCurve]:
    """A curve for each task type of ``policy`` with an error budget, tasks in the window and
    labelled cases (with their segment, where the budget is kept per segment)."""
    curves = []
    for task_type, rules in sorted(policy.task_types.items()):
        budget = rules.error_budget
        window = [t for t in tasks if t.task.task_type == task_type]
        if budget is None or not window:
            continue
        model = Counter(t.score.model for t in window).most_common(1)[0][0]
        cases = cases_for(task_type, model, budget.per_segment)
        grouped = by_segment(cases) if budget.per_segment is not None else None
        used = len(cases) if grouped is None else sum(map(len, grouped.values()))
        if not used:
            continue
        costs = Window(policy, task_type, window, hours)
        points = [
            costs.segmented(grouped, budget, max_error)
            if grouped is not None
            else costs.whole(cases, budget, max_error)
            for max_error in sorted({*CURVE, budget.max_error})
        ]
        curves.append(
            BudgetCurve(
                task_type=task_type,
                model=model,
                confidence=budget.confidence,
                max_error=budget.max_error,
                per_segment=budget.per_segment,
                cases=used,
                points=points,
            )
        )
    return curves


class Window:
    """One task type's tasks of the window, routed under variants of the policy."""

    def __init__(
        self, policy: Policy, task_type: str, tasks: Sequence[TaskScored], hours: int
    ) -> None:
        self.policy, self.task_type, self.tasks, self.hours = policy, task_type, tasks, hours

    def whole(self, cases: Sequence[Case], budget: ErrorBudget, max_error: float) -> BudgetPoint:
        """The task type's automatic outcomes at the one threshold that keeps ``max_error``."""
        try:
            threshold = calibrate(cases, max_error, budget.confidence).threshold
        except TooFewLabels:
            return _unpromised(max_error)
        rules = self.policy.task_types[self.task_type]
        moved = rules.model_copy(update={"auto": dict.fromkeys(rules.auto, threshold)})
        return self._point(max_error, moved, threshold=threshold)

    def segmented(
        self, grouped: Mapping[str, Sequence[Case]], budget: ErrorBudget, max_error: float
    ) -> BudgetPoint:
        """Each value's threshold over the task type's ``auto`` (as calibration per segment
        writes them); a value that cannot be promised sends its tasks to people."""
        found = calibrate_segments(grouped, max_error, budget.confidence)
        promised = {v: f for v, f in found.items() if isinstance(f, Calibration)}
        if not promised:
            return _unpromised(max_error, dict.fromkeys(found))
        when = self.tasks[-1].scored_at
        kept = budget.model_copy(
            update={"segments": {v: evidence(f, "what-if", when) for v, f in promised.items()}}
        )
        rules = self.policy.task_types[self.task_type].model_copy(update={"error_budget": kept})
        thresholds = {
            v: f.threshold if isinstance(f, Calibration) else None for v, f in found.items()
        }
        return self._point(max_error, rules, segments=thresholds)

    def _point(
        self,
        max_error: float,
        rules: TaskTypePolicy,
        threshold: float | None = None,
        segments: Mapping[str, float | None] | None = None,
    ) -> BudgetPoint:
        variant = self.policy.model_copy(update={"task_types": {self.task_type: rules}})
        routed = route_all(variant, self.tasks)
        automatic = sum(routing.route == "auto" for _, routing in routed)
        return BudgetPoint(
            max_error=max_error,
            threshold=threshold,
            segments=dict(segments or {}),
            automation_rate=share(automatic, len(routed)),
            review_items_per_hour=share(sum(reviewed(r) for _, r in routed), self.hours),
        )


def _unpromised(max_error: float, segments: Mapping[str, None] | None = None) -> BudgetPoint:
    return BudgetPoint(
        max_error=max_error,
        threshold=None,
        segments=dict(segments or {}),
        automation_rate=None,
        review_items_per_hour=None,
    )


def evidence(found: Calibration, data: str, at: datetime) -> Calibrated:
    """What a calibration leaves beside its threshold in a policy: where its cases came from
    (``data``) and when."""
    return Calibrated(
        threshold=found.threshold,
        cases=found.cases,
        automated=found.automated,
        errors=found.errors,
        upper_bound=round(found.upper_bound, 6),
        automation_rate=round(found.automation_rate, 6),
        data=data,
        at=at,
    )
