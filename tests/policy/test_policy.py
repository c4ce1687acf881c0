"""decide(): each rule of a policy, determinism and the QA sample."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from tandem_policy.loader import dump_policy as policy_document
from tandem_policy.loader import parse_policy
from tandem_policy.policy import (
    Blind,
    ErrorBudget,
    Overdue,
    Policy,
    QueueLevels,
    Rule,
    decide,
    qa_bucket,
)
from tandem_shared.events import PolicyRef, TaskScored

from tests.policy.factories import SCORED_AT, missing_flag, policy, scored

NOW = SCORED_AT


def test_confident_prediction_is_decided_automatically() -> None:
    routing = decide(policy(), scored(prediction="benign", confidence=0.98), NOW)
    assert routing.route == "auto"
    assert routing.outcome == "benign"
    assert routing.reasons == ("confident",)
    assert routing.policy == PolicyRef(name="test", version=3)
    assert not routing.qa_sample


@pytest.mark.parametrize(
    ("prediction", "confidence", "route"),
    [
        ("benign", 0.97, "auto"),  # the threshold itself is enough
        ("benign", 0.9699, "review"),
        ("malignant", 0.99, "auto"),
        ("malignant", 0.98, "review"),  # confident enough for benign, not for malignant
    ],
)
def test_confidence_bands_are_per_outcome(prediction: str, confidence: float, route: str) -> None:
    routing = decide(policy(), scored(prediction=prediction, confidence=confidence), NOW)
    assert routing.route == route
    assert routing.reasons == (("confident",) if route == "auto" else ("low_confidence",))
    assert routing.outcome == prediction


def test_an_outcome_without_a_threshold_is_never_automatic() -> None:
    routing = decide(
        policy(auto={"benign": 0.9}), scored(prediction="malignant", confidence=1.0), NOW
    )
    assert routing.route == "review"
    assert routing.reasons == ("outcome_not_automatic",)
    assert routing.outcomes == ("benign", "malignant")


def test_a_prediction_outside_the_outcomes_goes_to_review() -> None:
    routing = decide(policy(), scored(prediction="unsure", confidence=1.0), NOW)
    assert routing.route == "review"
    assert routing.reasons == ("unknown_outcome",)
    assert routing.outcomes == ("benign", "malignant")


def test_critical_tasks_go_to_review_with_the_policy_approvals() -> None:
    routing = decide(policy(critical_approvals=3), scored(critical=True, confidence=0.999), NOW)
    assert routing.route == "review"
    assert routing.reasons == ("critical",)
    assert routing.required_approvals == 3


def test_an_overdue_critical_task_goes_to_a_senior_never_to_the_fallback() -> None:
    falls_back = policy(overdue=Overdue(action="fallback", outcome="benign"))
    assert decide(falls_back, scored(critical=True, confidence=0.5), NOW).overdue == Overdue()
    routine = decide(falls_back, scored(confidence=0.5), NOW)
    assert routine.overdue == Overdue(action="fallback", outcome="benign")


def test_non_critical_reviews_need_one_approval() -> None:
    assert decide(policy(), scored(confidence=0.5), NOW).required_approvals == 1


def test_data_quality_flags_send_confident_tasks_to_review() -> None:
    routing = decide(policy(), scored(confidence=0.999, flags=[missing_flag()]), NOW)
    assert routing.route == "review"
    assert routing.reasons == ("data_quality",)


def test_quality_flags_can_escalate_or_be_ignored() -> None:
    task = scored(confidence=0.999, flags=[missing_flag()])
    assert decide(policy(quality_flags="escalate"), task, NOW).route == "escalate"
    assert decide(policy(quality_flags="ignore"), task, NOW).route == "auto"


def test_every_reason_is_reported_once_in_a_stable_order() -> None:
    task = scored(critical=True, confidence=0.5, flags=[missing_flag(), missing_flag("area")])
    routing = decide(policy(), task, NOW)
    assert routing.reasons == ("critical", "data_quality", "low_confidence")


def test_very_low_confidence_escalates() -> None:
    rules = policy(escalate_below=0.6)
    assert decide(rules, scored(confidence=0.55), NOW).route == "escalate"
    assert decide(rules, scored(confidence=0.55), NOW).reasons == (
        "very_low_confidence",
        "low_confidence",
    )
    assert decide(rules, scored(confidence=0.65), NOW).route == "review"


def test_feature_and_context_rules() -> None:
    rules = policy(
        rules=[
            Rule(reason="large_lesion", feature="radius", op="gt", value=25),
            Rule(
                reason="pilot_clinic", context="clinic", op="in", value=["east"], route="escalate"
            ),
        ]
    )
    assert decide(rules, scored(features={"radius": 12.0}), NOW).route == "auto"
    large = decide(rules, scored(features={"radius": 30.0}), NOW)
    assert (large.route, large.reasons) == ("review", ("large_lesion",))
    pilot = decide(rules, scored(context={"clinic": "east"}), NOW)
    assert (pilot.route, pilot.reasons) == ("escalate", ("pilot_clinic",))
    # A missing or non-numeric value never matches a comparison.
    assert decide(rules, scored(features={"radius": None}), NOW).route == "auto"
    assert decide(rules, scored(features={"radius": "big"}), NOW).route == "auto"


def test_kill_switch_sends_everything_to_people() -> None:
    routing = decide(policy(), scored(confidence=1.0), NOW, kill_switch=True)
    assert (routing.route, routing.reasons) == ("review", ("kill_switch",))


def test_priority_is_the_higher_of_policy_and_task_and_due_time_follows_the_policy() -> None:
    rules = policy(review_priority=60, review_due=timedelta(minutes=30))
    low = decide(rules, scored(confidence=0.5, priority=10), NOW)
    high = decide(rules, scored(confidence=0.5, priority=90), NOW)
    assert (low.review_priority, high.review_priority) == (60, 90)
    assert low.routed_at == NOW
    assert low.due_at == NOW + timedelta(minutes=30)


def test_a_task_type_without_policy_goes_to_review_with_the_model_labels() -> None:
    task = scored(task_type="loan_application", prediction="approve", confidence=1.0)
    routing = decide(policy(), task, NOW)
    assert routing.route == "review"
    assert routing.reasons == ("no_policy_for_task_type",)
    assert routing.outcomes == ("approve", "benign")  # the factory's two labels, sorted
    assert routing.required_approvals == 1
    critical = decide(policy(), scored(task_type="other", critical=True), NOW)
    assert critical.reasons == ("no_policy_for_task_type", "critical")
    assert critical.required_approvals == 2


def test_qa_bucket_is_stable_and_in_range() -> None:
    # Pinned: a change of the hash would re-sample every task on replay.
    assert qa_bucket("task-1") == qa_bucket("task-1")
    assert qa_bucket("task-1") == pytest.approx(0.48039, abs=1e-5)
    assert all(0.0 <= qa_bucket(f"t-{n}") < 1.0 for n in range(1000))


def test_qa_sample_marks_automatic_decisions_only() -> None:
    everything = policy(qa_sample_rate=1.0)
    auto = decide(everything, scored(confidence=0.999), NOW)
    assert (auto.route, auto.qa_sample) == ("auto", True)
    review = decide(everything, scored(confidence=0.5), NOW)
    assert (review.route, review.qa_sample) == ("review", False)
    assert not decide(policy(qa_sample_rate=0.0), scored(confidence=0.999), NOW).qa_sample


def test_qa_sample_rate_holds_over_ten_thousand_tasks() -> None:
    rules = policy(qa_sample_rate=0.05)
    ids = [f"ts-{n:06d}" for n in range(10_000)]
    sampled = [decide(rules, scored(i, confidence=0.999), NOW).qa_sample for i in ids]
    # Binomial(10000, 0.05): sd ≈ 22, so ±100 is more than 4 sd.
    assert 400 <= sum(sampled) <= 600
    again = [decide(rules, scored(i, confidence=0.999), NOW).qa_sample for i in ids]
    assert again == sampled
    # A higher rate keeps every task the lower rate sampled: raising it only adds tasks.
    wider = [decide(policy(qa_sample_rate=0.1), scored(i), NOW).qa_sample for i in ids]
    assert all(w for s, w in zip(sampled, wider, strict=True) if s)


scored_tasks = st.builds(
    scored,
    # Any id the contract allows: printable, no "/".
    task_id=st.from_regex(r"\A[^\x00-\x1f\x7f/]{1,128}\Z"),
    prediction=st.sampled_from(["benign", "malignant", "other"]),
    confidence=st.floats(min_value=0.0, max_value=1.0),
    task_type=st.sampled_from(["tumor_screening", "unknown"]),
    critical=st.booleans(),
    priority=st.integers(min_value=0, max_value=100),
    features=st.dictionaries(
        st.sampled_from(["radius", "area"]),
        st.one_of(
            st.none(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=5),
            st.booleans(),
        ),
    ),
    flags=st.lists(st.sampled_from([missing_flag()]), max_size=2),
)


@given(task=scored_tasks, rate=st.floats(min_value=0.0, max_value=1.0))
def test_same_input_same_routing(task: TaskScored, rate: float) -> None:
    rules = policy(
        qa_sample_rate=rate,
        rules=[Rule(reason="large_lesion", feature="radius", op="ge", value=20)],
    )
    first = decide(rules, task, NOW)
    replayed = TaskScored.model_validate_json(task.model_dump_json())
    # The same version as every replica reads it: the document published on the control topic.
    published = parse_policy(policy_document(rules))
    second = decide(published, replayed, NOW)
    assert first == second
    assert first.route in ("auto", "review", "escalate")
    assert (first.route == "auto") == (first.reasons == ("confident",))
    assert first.review_priority >= task.task.priority


def test_rules_combine_conditions_with_all_and_any() -> None:
    both = Rule.model_validate(
        {
            "reason": "large_and_east",
            "all": [
                {"feature": "radius", "op": "gt", "value": 20},
                {
                    "any": [
                        {"context": "clinic", "op": "eq", "value": "east"},
                        {"context": "clinic", "op": "eq", "value": "north"},
                    ]
                },
            ],
        }
    )
    rules = policy(rules=[both])
    assert (
        decide(rules, scored(features={"radius": 30.0}, context={"clinic": "west"}), NOW).route
        == "auto"
    )
    assert (
        decide(rules, scored(features={"radius": 10.0}, context={"clinic": "east"}), NOW).route
        == "auto"
    )
    matched = decide(rules, scored(features={"radius": 30.0}, context={"clinic": "north"}), NOW)
    assert (matched.route, matched.reasons) == ("review", ("large_and_east",))


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ({"all": []}, "at least one condition"),
        (
            {
                "feature": "radius",
                "op": "gt",
                "value": 1,
                "any": [{"feature": "a", "op": "eq", "value": 1}],
            },
            "one of",
        ),
        ({"feature": "radius", "op": "gt"}, "'op' and 'value'"),
        ({"context": "clinic", "op": "in", "value": "east"}, "needs a list"),
    ],
)
def test_malformed_conditions_are_refused(condition: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Rule.model_validate({"reason": "r", **condition})


@pytest.mark.parametrize(
    ("drift", "route"), [("review", "review"), ("escalate", "escalate"), ("ignore", "auto")]
)
def test_a_drift_alarm_does_what_the_policy_says(drift: str, route: str) -> None:
    routing = decide(policy(drift=drift), scored(confidence=1.0), NOW, drifting=True)
    assert routing.route == route
    assert ("drift_alarm" in routing.reasons) == (drift != "ignore")


def test_an_unreadable_control_topic_sends_tasks_to_review() -> None:
    routing = decide(policy(), scored(confidence=1.0), NOW, control_unreadable=True)
    assert (routing.route, routing.reasons) == ("review", ("control_unreadable",))


def test_the_overdue_action_is_carried_and_a_fallback_must_be_an_outcome() -> None:
    fallback = Overdue(action="fallback", outcome="malignant")
    routing = decide(policy(overdue=fallback), scored(confidence=0.5), NOW)
    assert routing.overdue == fallback
    with pytest.raises(ValidationError, match="not in outcomes"):
        policy(overdue=Overdue(action="fallback", outcome="maybe"))
    with pytest.raises(ValidationError, match="only then"):
        Overdue(action="pending", outcome="benign")


def test_a_review_is_blind_by_task_type_rule_reason_or_qa_sample() -> None:
    uncertain, confident = scored(confidence=0.8), scored(confidence=0.999)
    large = scored(confidence=0.999, features={"radius": 30.0})
    assert not decide(policy(), uncertain, NOW).blind  # seen as it is, unless the policy says
    assert decide(policy(blind=Blind(reviews=True)), uncertain, NOW).blind
    by_reason = policy(blind=Blind(reasons=["low_confidence"]))
    assert decide(by_reason, uncertain, NOW).blind
    assert not decide(by_reason, scored(confidence=0.8, critical=True, prediction="x"), NOW).blind
    rule = Rule(reason="large_lesion", feature="radius", op="gt", value=25, blind=True)
    by_rule = policy(rules=[rule])
    assert decide(by_rule, large, NOW).blind
    assert not decide(by_rule, uncertain, NOW).blind
    # The QA sample's review: blind when the policy asks for it (or for every review).
    qa = decide(policy(qa_sample_rate=1.0, blind=Blind(qa_samples=True)), confident, NOW)
    assert (qa.route, qa.qa_sample, qa.blind) == ("auto", True, True)
    assert not decide(policy(qa_sample_rate=1.0), confident, NOW).blind
    only_uncertain = Blind(reasons=["low_confidence"])
    assert not decide(policy(qa_sample_rate=1.0, blind=only_uncertain), confident, NOW).blind


def test_a_blind_setting_names_known_keys_only() -> None:
    with pytest.raises(ValidationError, match="qa_sample"):
        Blind.model_validate({"qa_sample": True})  # a misspelt qa_samples


def test_a_review_goes_to_the_queue_of_its_first_rule_or_of_its_task_type() -> None:
    large = Rule(
        reason="large_lesion", feature="radius", op="gt", value=25, queue="oncology-senior"
    )
    pilot = Rule(reason="pilot", context="clinic", op="eq", value="east", queue="pilot-team")
    rules = policy(queue="screening", rules=[large, pilot])
    both = scored(features={"radius": 30.0}, context={"clinic": "east"})
    assert decide(rules, both, NOW).queue == "oncology-senior"  # the first rule that holds
    assert decide(rules, scored(context={"clinic": "east"}), NOW).queue == "pilot-team"
    assert decide(rules, scored(confidence=0.5), NOW).queue == "screening"  # the task type's
    assert decide(policy(), scored(confidence=0.5), NOW).queue is None  # the general queue
    with pytest.raises(ValidationError):
        Rule(reason="x", feature="radius", op="gt", value=1, queue="no spaces allowed")


def with_queues(base: Policy, **queues: QueueLevels) -> Policy:
    return Policy.model_validate({**base.model_dump(), "queues": queues})


def test_a_named_queue_has_its_own_due_time_and_overdue_step() -> None:
    large = Rule(reason="large_lesion", feature="radius", op="gt", value=25, queue="senior")
    fallback = Overdue(action="fallback", outcome="benign")
    base = policy(queue="screening", rules=[large], review_due=timedelta(hours=8))
    levels = with_queues(
        base,
        senior=QueueLevels(review_due=timedelta(minutes=30), overdue=Overdue(action="pending")),
        screening=QueueLevels(overdue=fallback),  # the task type's due time, its own step
    )
    to_senior = decide(levels, scored(features={"radius": 30.0}), NOW)
    assert (to_senior.queue, to_senior.due_at) == ("senior", NOW + timedelta(minutes=30))
    assert to_senior.overdue == Overdue(action="pending")
    general = decide(levels, scored(confidence=0.5), NOW)
    assert (general.queue, general.due_at) == ("screening", NOW + timedelta(hours=8))
    assert general.overdue == fallback
    # The queue's fallback is never a critical task's: overdue, it goes to a senior.
    assert decide(levels, scored(confidence=0.5, critical=True), NOW).overdue == Overdue()
    # A queue without levels of its own keeps the task type's.
    plain = decide(base, scored(features={"radius": 30.0}), NOW)
    assert (plain.due_at, plain.overdue) == (NOW + timedelta(hours=8), Overdue())


def test_queue_levels_are_checked_against_what_sends_to_the_queue() -> None:
    base = policy(queue="screening")
    with pytest.raises(ValidationError, match=r"queues \['screnning'\] get no reviews"):
        with_queues(base, screnning=QueueLevels(review_due=timedelta(hours=1)))
    with pytest.raises(ValidationError, match="'maybe' is not an outcome of task type"):
        with_queues(
            base, screening=QueueLevels(overdue=Overdue(action="fallback", outcome="maybe"))
        )


def test_a_task_s_segment_is_its_context_values_of_the_policy_s_segment_attributes() -> None:
    segmented = Policy.model_validate(policy().model_dump() | {"segments": ["clinic", "site"]})
    task = scored(context={"clinic": "east", "site": 3, "age": 61})
    routing = decide(segmented, task, SCORED_AT)
    assert routing.route == "auto"
    assert routing.segment == {"clinic": "east", "site": "3"}
    assert segmented.segment_of(scored(context={"clinic": "x" * 99}).task) == {
        "clinic": "x" * 64,
        "site": "(none)",
    }
    assert decide(segmented, scored(task_type="unknown_type"), SCORED_AT).segment == {
        "clinic": "(none)",
        "site": "(none)",
    }
    assert decide(policy(), task, SCORED_AT).segment == {}  # no segments named: none kept
    with pytest.raises(ValidationError, match="at most 5"):
        Policy.model_validate(policy().model_dump() | {"segments": list("abcdef")})


@pytest.mark.parametrize(
    ("on_breach", "route", "reasons"),
    [
        ("review", "review", ("error_budget",)),
        ("escalate", "escalate", ("error_budget",)),
        ("ignore", "auto", ("confident",)),
    ],
)
def test_a_breached_error_budget_does_what_the_policy_says(
    on_breach: str, route: str, reasons: tuple[str, ...]
) -> None:
    budgeted = policy(error_budget=ErrorBudget(max_error=0.01, on_breach=on_breach))  # type: ignore[arg-type]
    routing = decide(budgeted, scored(confidence=0.999), NOW, budget_breached=True)
    assert (routing.route, routing.reasons) == (route, reasons)
    kept = decide(budgeted, scored(confidence=0.999), NOW, budget_breached=False)
    assert kept.route == "auto"
    # No budget stated: a breach cannot be said, and would change nothing.
    assert decide(policy(), scored(confidence=0.999), NOW, budget_breached=True).route == "auto"


def test_a_budget_kept_per_segment_routes_each_value_by_its_own_threshold() -> None:
    def evidence(threshold: float) -> dict[str, object]:
        return {
            "threshold": threshold, "cases": 900, "automated": 800, "errors": 1,
            "upper_bound": 0.006, "automation_rate": 0.89, "data": "QA verdicts", "at": NOW,
        }  # fmt: skip

    budget = {"max_error": 0.01, "per_segment": "clinic"}
    data = policy().model_dump() | {"segments": ["clinic"]}
    data["task_types"]["tumor_screening"]["error_budget"] = budget | {
        "segments": {"north": evidence(0.98), "south": evidence(0.995)}
    }
    kept = Policy.model_validate(data)

    def route(clinic: str | None, confidence: float) -> tuple[str, tuple[str, ...]]:
        task = scored(confidence=confidence, context={"clinic": clinic} if clinic else {})
        routing = decide(kept, task, NOW)
        return routing.route, routing.reasons

    assert route("north", 0.99) == ("auto", ("confident",))
    # South's own threshold is stricter than the task type's 0.97.
    assert route("south", 0.99) == ("review", ("low_confidence",))
    assert route("south", 0.996) == ("auto", ("confident",))
    # A clinic without a calibration of its own has no promise: people decide.
    assert route("west", 0.999) == ("review", ("segment_not_calibrated",))
    assert route(None, 0.999) == ("review", ("segment_not_calibrated",))
    # What the live watch's breach would be counted against.
    assert kept.budget_scope(scored(context={"clinic": "south"}).task) == (
        "tumor_screening",
        "clinic=south",
    )
    # Not yet calibrated per segment: the task type's budget and thresholds, as before.
    data["task_types"]["tumor_screening"]["error_budget"] = budget
    uncalibrated = Policy.model_validate(data)
    assert decide(uncalibrated, scored(context={"clinic": "west"}), NOW).route == "auto"
    assert uncalibrated.budget_scope(scored().task) == ("tumor_screening", None)
    # The attribute must be one the policy segments by.
    data["segments"] = ["site"]
    with pytest.raises(ValidationError, match="per_segment 'clinic' is not one of"):
        Policy.model_validate(data)
