"""compare(): a window of scored tasks under the active and a proposed policy, side by side."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from rich.console import Console
from tandem_cli.policy import render
from tandem_policy.budget import Case
from tandem_policy.budget_cost import BudgetPoint
from tandem_policy.policy import ErrorBudget, Policy
from tandem_policy.whatif import (
    Accuracy,
    Change,
    Placement,
    ReviewLoad,
    SlaRisk,
    WhatIf,
    compare,
)
from tandem_shared.events import ModelRef, PolicyRef, TaskScored

from tests.policy.factories import SCORED_AT, policy, scored

ACTIVE = policy(escalate_below=0.6)  # test v3: benign from 0.97, malignant from 0.99
PROPOSED = policy(escalate_below=0.6, auto={"benign": 0.9, "malignant": 0.99}).model_copy(
    update={"version": 4}
)
HOUR_10 = SCORED_AT.replace(minute=0, second=0)


def at(task: TaskScored, minutes: int) -> TaskScored:
    """The task scored, and so routed, ``minutes`` after SCORED_AT (10:00:05)."""
    return task.model_copy(update={"scored_at": SCORED_AT + timedelta(minutes=minutes)})


# Review due four hours after routing; escalated under 0.6 by both policies.
TASKS = [
    at(scored("a", confidence=0.98), 0),  # auto under both
    at(scored("b", confidence=0.95), 0),  # review, then auto
    at(scored("c", confidence=0.92), 20),  # review, then auto
    at(scored("d", prediction="malignant", confidence=0.985), 40),  # review under both
    at(scored("e", confidence=0.5), 70),  # escalated under both
    at(scored("f", confidence=0.93, critical=True, priority=80), 90),  # review, served first
]
# b's model outcome was overruled; "x" is not in the window.
LABELS = {"a": "benign", "b": "malignant", "c": "benign", "d": "malignant", "x": "benign"}


def test_a_window_computed_by_hand() -> None:
    # Half a review an hour: each review takes two hours of the one reviewer.
    report = compare(ACTIVE, PROPOSED, TASKS, LABELS, reviews_per_hour=0.5)
    active, proposed = report.active, report.proposed
    assert (active.policy, proposed.policy) == (
        PolicyRef(name="test", version=3),
        PolicyRef(name="test", version=4),
    )
    assert (report.hours, report.reviews_per_hour) == (2, 0.5)
    assert (active.tasks, active.automatic, active.automation_rate) == (6, 1, 1 / 6)
    assert (proposed.tasks, proposed.automatic, proposed.automation_rate) == (6, 3, 0.5)
    assert (active.reviews, active.escalations, active.qa_samples) == (4, 1, 0)
    assert (proposed.reviews, proposed.escalations, proposed.qa_samples) == (2, 1, 0)
    assert active.accuracy == Accuracy(labelled=1, correct=1, accuracy=1.0)
    assert proposed.accuracy == Accuracy(labelled=3, correct=2, accuracy=2 / 3)
    # Active: b, c, d in the 10 o'clock hour, e, f in the 11 o'clock one.
    assert active.review_load == ReviewLoad(mean_per_hour=2.5, peak_per_hour=3, peak_hour=HOUR_10)
    assert proposed.review_load == ReviewLoad(
        mean_per_hour=1.5, peak_per_hour=2, peak_hour=HOUR_10 + timedelta(hours=1)
    )
    # Active: b 10:00-12:00, f (priority 80) 12:00-14:00, then c, d and e all past due.
    assert active.sla == SlaRisk(late=3, late_share=0.6)
    # Proposed: d 10:40-12:40, f 12:40-14:40, e 14:40-16:40 past its 15:10.
    assert proposed.sla == SlaRisk(late=1, late_share=1 / 3)
    low = Placement(route="review", reasons=("low_confidence",))
    confident = Placement(route="auto", reasons=("confident",))
    assert report.changed == [
        Change(task_id="b", task_type="tumor_screening", active=low, proposed=confident),
        Change(task_id="c", task_type="tumor_screening", active=low, proposed=confident),
    ]
    assert report.changed_total == 2


def test_the_changed_list_is_ordered_by_task_id_and_capped() -> None:
    report = compare(ACTIVE, PROPOSED, list(reversed(TASKS)), LABELS, 1.0, limit=1)
    assert [change.task_id for change in report.changed] == ["b"]
    assert report.changed_total == 2


def test_identical_policies_give_equal_sides_and_no_changes() -> None:
    report = compare(ACTIVE, ACTIVE, TASKS, LABELS, reviews_per_hour=0.5)
    assert report.active == report.proposed
    assert report.changed == []
    assert report.changed_total == 0


def test_a_duplicate_task_counts_once_and_the_first_copy_wins() -> None:
    tasks = [scored("a", confidence=0.98), scored("a", confidence=0.5), scored("b", confidence=0.5)]
    side = compare(ACTIVE, ACTIVE, tasks, {"a": "benign"}, 1.0).active
    assert (side.tasks, side.automatic, side.escalations) == (2, 1, 1)
    assert side.accuracy == Accuracy(labelled=1, correct=1, accuracy=1.0)


def test_no_tasks_give_zeros_and_no_accuracy() -> None:
    report = compare(ACTIVE, PROPOSED, [], LABELS, 1.0)
    for side in (report.active, report.proposed):
        assert (side.tasks, side.automatic, side.automation_rate) == (0, 0, 0.0)
        assert (side.reviews, side.escalations, side.qa_samples) == (0, 0, 0)
        assert side.accuracy == Accuracy(labelled=0, correct=0, accuracy=None)
        assert side.review_load == ReviewLoad(mean_per_hour=0.0, peak_per_hour=0, peak_hour=None)
        assert side.sla == SlaRisk(late=0, late_share=0.0)
    assert (report.hours, report.changed, report.changed_total) == (0, [], 0)


def test_qa_samples_stay_automatic_but_load_the_reviewers() -> None:
    tasks = [scored("a", confidence=0.98), scored("b", confidence=0.99)]
    report = compare(ACTIVE, policy(qa_sample_rate=1.0), tasks, {}, 1.0)
    proposed = report.proposed
    assert (proposed.automatic, proposed.qa_samples, proposed.reviews) == (2, 2, 0)
    assert proposed.review_load == ReviewLoad(mean_per_hour=2.0, peak_per_hour=2, peak_hour=HOUR_10)
    assert proposed.sla == SlaRisk(late=0, late_share=0.0)
    assert report.active.review_load.mean_per_hour == 0.0
    assert report.changed == []  # same route, only the sample differs


def test_a_higher_priority_review_is_served_before_an_older_one() -> None:
    # Three hours a review. x and y wait from 10:00 (due 14:00); z (priority 90) from 12:54.
    # At 13:00 z goes first and is in time, y is late; in arrival order both would be late.
    tasks = [
        scored("x", confidence=0.9),
        scored("y", confidence=0.9),
        at(scored("z", confidence=0.9, priority=90), 174),
    ]
    assert compare(ACTIVE, ACTIVE, tasks, {}, 1 / 3).active.sla.late == 1


def test_among_equal_priorities_the_earliest_due_is_served_first() -> None:
    # An hour a review. u and w, of a type the policy does not name, are due four hours after
    # routing; t only two. u is served 10:00-11:00; then t (due 12:20) before w (due 14:05).
    tasks = [
        scored("u", task_type="other"),
        at(scored("w", task_type="other"), 5),
        at(scored("t", confidence=0.9), 20),
    ]
    rules = policy(review_due=timedelta(hours=2))
    assert compare(rules, rules, tasks, {}, 1.0).active.sla.late == 0


def test_a_review_finished_at_its_due_time_is_in_time() -> None:
    report = compare(ACTIVE, ACTIVE, [scored("a", confidence=0.9)], {}, 0.25)
    assert report.active.sla == SlaRisk(late=0, late_share=0.0)
    assert compare(ACTIVE, ACTIVE, [scored("a", confidence=0.9)], {}, 0.24).active.sla.late == 1


@pytest.mark.parametrize("capacity", [0.0, -1.0, math.nan, math.inf])
def test_the_capacity_must_be_a_positive_number(capacity: float) -> None:
    with pytest.raises(ValueError, match="reviews_per_hour"):
        compare(ACTIVE, PROPOSED, TASKS, LABELS, capacity)


def test_the_report_survives_json() -> None:
    report = compare(ACTIVE, PROPOSED, TASKS, LABELS, 0.5)
    assert WhatIf.model_validate_json(report.model_dump_json()) == report


def test_render_shows_both_sides_and_the_changed_tasks() -> None:
    console = Console(record=True, width=160)
    console.print(*render(compare(ACTIVE, PROPOSED, TASKS, LABELS, 0.5), changes=1))
    text = console.export_text()
    assert "test v3" in text and "test v4" in text
    assert "1 (16.7%)" in text and "3 (50.0%)" in text and "+2 (+33.3 pts)" in text
    assert "review: low_confidence" in text and "auto: confident" in text
    assert "1 of 2 shown" in text


def test_the_budget_curve_routes_the_window_at_each_calibrated_threshold() -> None:
    """Labelled cases: 700 at confidence 0.99, all right; 300 at 0.90, a fifth of them wrong.
    A budget under 6% can only be kept above 0.90 (0.901, the grid's step above); 10% can
    take them all (0.5); 0.2% and less need more clean cases than there are."""
    cases = [Case(0.99, True)] * 700 + [Case(0.90, n % 5 != 0) for n in range(300)]
    asked: list[tuple[str, ModelRef]] = []

    def cases_for(task_type: str, model: ModelRef, attribute: str | None) -> list[Case]:
        asked.append((task_type, model))
        return cases

    budgeted = PROPOSED.model_copy(update={"version": 5})
    rules = budgeted.task_types["tumor_screening"].model_copy(
        update={"error_budget": ErrorBudget(max_error=0.005, confidence=0.9)}
    )
    budgeted = budgeted.model_copy(update={"task_types": {"tumor_screening": rules}})
    window = [
        at(scored("p", confidence=0.99), 0),
        at(scored("q", confidence=0.95), 10),
        at(scored("r", confidence=0.7), 20),  # automatic only at 0.5
        at(scored("s", confidence=0.55), 30),  # escalated at any threshold
    ]
    report = compare(ACTIVE, budgeted, window, {}, 1.0, cases_for=cases_for)
    [curve] = report.budgets
    assert asked == [("tumor_screening", ModelRef(name="tumor_screening", version="1"))]
    assert (curve.task_type, curve.cases, curve.max_error, curve.confidence) == (
        "tumor_screening", 1000, 0.005, 0.9,
    )  # fmt: skip
    unkept = BudgetPoint(
        max_error=0.001, threshold=None, automation_rate=None, review_items_per_hour=None
    )
    tight = {"threshold": 0.901, "automation_rate": 0.5, "review_items_per_hour": 2.0}
    assert curve.points == [
        unkept,
        unkept.model_copy(update={"max_error": 0.002}),
        *(BudgetPoint(max_error=e, **tight) for e in (0.005, 0.01, 0.02, 0.05)),
        BudgetPoint(max_error=0.1, threshold=0.5, automation_rate=0.75, review_items_per_hour=1),
    ]
    # Without a budget in the proposed policy, or without cases, there is no curve.
    assert compare(ACTIVE, PROPOSED, window, {}, 1.0, cases_for=cases_for).budgets == []
    assert compare(ACTIVE, budgeted, window, {}, 1.0, cases_for=lambda t, m, a: []).budgets == []
    console = Console(record=True, width=160)
    console.print(*render(report))
    text = console.export_text()
    assert "automation against the error budget, promised at 90%" in text
    assert "0.5% (proposed)" in text and "cannot promise" in text


def test_a_budget_kept_per_segment_is_costed_with_a_threshold_per_value() -> None:
    """North's cases as above; south is wrong a third of the time at 0.95; west has 20 cases,
    too few to promise anything. Each clinic is tested at 1 - 0.1/3."""
    north = [Case(0.99, True, "north")] * 700 + [
        Case(0.90, n % 5 != 0, "north") for n in range(300)
    ]
    south = [Case(0.99, True, "south")] * 400 + [
        Case(0.95, n % 3 != 0, "south") for n in range(300)
    ]
    cases = [*north, *south, *[Case(0.99, True, "west")] * 20]
    cases += [Case(0.99, False)]  # no clinic (a holdout row): no part of a clinic's promise
    asked: list[str | None] = []

    def cases_for(task_type: str, model: ModelRef, attribute: str | None) -> list[Case]:
        asked.append(attribute)
        return cases

    data = PROPOSED.model_dump() | {"segments": ["clinic"]}
    data["task_types"]["tumor_screening"]["error_budget"] = {
        "max_error": 0.05, "confidence": 0.9, "per_segment": "clinic",
    }  # fmt: skip
    kept = Policy.model_validate(data)
    window = [
        at(scored("n", confidence=0.92, context={"clinic": "north"}), 0),
        at(scored("s1", confidence=0.96, context={"clinic": "south"}), 10),
        at(scored("s2", confidence=0.93, context={"clinic": "south"}), 20),  # under south's
        at(scored("w", confidence=0.99, context={"clinic": "west"}), 30),  # west: to people
    ]
    [curve] = compare(ACTIVE, kept, window, {}, 1.0, cases_for=cases_for).budgets
    assert asked == ["clinic"]
    assert (curve.per_segment, curve.cases) == ("clinic", 1720)
    points = {p.max_error: p for p in curve.points}
    assert points[0.05].segments == {"north": 0.901, "south": 0.951, "west": None}
    assert (points[0.05].automation_rate, points[0.05].review_items_per_hour) == (0.5, 2.0)
    assert points[0.1].segments == {"north": 0.5, "south": 0.951, "west": None}
    assert points[0.001].automation_rate is None  # no clinic can promise it
    console = Console(record=True, width=160)
    console.print(*render(compare(ACTIVE, kept, window, {}, 1.0, cases_for=cases_for)))
    text = console.export_text()
    assert "in each clinic together" in text
    assert "north 0.901, south 0.951, west to people" in text
