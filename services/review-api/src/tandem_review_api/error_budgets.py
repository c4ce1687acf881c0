"""The live watch of error budgets, pure: for each task type whose active policy states one
(each calibrated segment value, where the budget is kept per segment), the QA samples decided
under that policy version (automatic decisions people checked), their errors, and the
one-sided upper bound on the error rate at the budget's confidence (tandem_policy.budget).
The budget is breached when the bound passes it, once the samples are enough to show it could
be kept at all: before that the watch reports, and acts on nothing, so a task type is never
sent to people for want of samples that only its automatic decisions bring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from tandem_policy.budget import Case, fewest_cases, upper_bound
from tandem_policy.budget_cost import CasesFor
from tandem_policy.policy import NO_SEGMENT, ErrorBudget, Policy
from tandem_shared.budget_watch import KIND, BudgetWatch, budget_key
from tandem_shared.events import ControlChanged, ModelRef

from tandem_review_api.stats import ReviewFacts, model_label


def watches(policy: Policy, reviews: Sequence[ReviewFacts], now: datetime) -> list[BudgetWatch]:
    """One watch per task type with a budget, or per calibrated segment value where the
    budget is kept per segment."""
    label = f"{policy.name} v{policy.version}"
    found = []
    for task_type, rules in sorted(policy.task_types.items()):
        budget = rules.error_budget
        if budget is None:
            continue
        checked = [
            r
            for r in reviews
            if r.task_type == task_type and r.qa_sample and r.outcome and r.policy == label
        ]
        attribute = budget.segmented
        if attribute is None:
            found.append(_watch(policy, task_type, None, budget, checked, now))
            continue
        for value in sorted(budget.segments):
            within = [r for r in checked if r.segment.get(attribute) == value]
            found.append(_watch(policy, task_type, f"{attribute}={value}", budget, within, now))
    return found


def _watch(
    policy: Policy,
    task_type: str,
    segment: str | None,
    budget: ErrorBudget,
    checked: Sequence[ReviewFacts],
    now: datetime,
) -> BudgetWatch:
    errors = sum(r.outcome != r.prediction for r in checked)
    bound = upper_bound(errors, len(checked), budget.confidence)
    enough = len(checked) >= fewest_cases(budget.max_error, budget.confidence)
    return BudgetWatch(
        task_type=task_type,
        segment=segment,
        policy=policy.ref,
        max_error=budget.max_error,
        confidence=budget.confidence,
        qa_samples=len(checked),
        errors=errors,
        upper_bound=round(bound, 6),
        breached=enough and bound > budget.max_error,
        at=now,
    )


def qa_verdicts(reviews: Sequence[ReviewFacts]) -> CasesFor:
    """The decided QA samples as labelled cases for the what-if's budget curves, by task type
    and model version: the unbiased look calibration takes from people."""
    decided = [
        (r, r.confidence)
        for r in reviews
        if r.qa_sample and r.outcome is not None and r.confidence is not None
    ]

    def cases_for(task_type: str, model: ModelRef, attribute: str | None) -> list[Case]:
        label = model_label(model)
        cases = [
            Case(
                confidence,
                r.outcome == r.prediction,
                None if attribute is None else r.segment.get(attribute, NO_SEGMENT),
            )
            for r, confidence in decided
            if r.task_type == task_type and r.model == label
        ]
        # The same verdicts calibrate the same, in any row order.
        return sorted(cases, key=lambda c: (c.confidence, c.right, c.segment or ""))

    return cases_for


def changed(found: Sequence[BudgetWatch], held: Mapping[str, ControlChanged]) -> list[BudgetWatch]:
    """The watches whose verdict (breached or not, under which policy) differs from the one
    the control topic holds: only those are published, so the topic carries changes, not a
    heartbeat, however many replicas watch."""
    out = []
    for watch in found:
        record = held.get(budget_key(watch))
        before = (
            BudgetWatch.model_validate(record.value) if record and record.kind == KIND else None
        )
        if before is None or (before.breached, before.policy) != (watch.breached, watch.policy):
            out.append(watch)
    return out
