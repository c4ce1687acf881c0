"""The router's batch handler without a broker: what it publishes for each kind of routing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from tandem_policy.policy import Blind, Policy
from tandem_router.consumer import RouterHandler
from tandem_router.control import RoutingControl
from tandem_router.dedupe import SeenTasks
from tandem_router.telemetry import RouterMetrics
from tandem_shared.budget_watch import BudgetWatch
from tandem_shared.control import KillSwitch, budget_change
from tandem_shared.envelope import Event, event_id
from tandem_shared.events import DecisionMade, EventData, TaskRouted, TaskSubmitted
from tandem_shared.kafka import Incoming, Outgoing, Record, Rejected
from tandem_shared.topics import Topics

from tests.policy.factories import SCORED_AT, policy, scored

TOPICS = Topics("t.")
TUMOR = {"task_type": "tumor_screening"}


def incoming(data: EventData, offset: int = 0, partition: int = 0) -> Incoming[Event[EventData]]:
    subject = str(getattr(getattr(data, "task", data), "task_id", ""))
    event = Event("scored-id", "tandem/scoring", subject, data, SCORED_AT)
    return Incoming(event, TOPICS.scored, partition, offset, subject, (), 0, event.value())


def handler(
    rules: Policy | None = None, kill_switch: bool = False
) -> tuple[RouterHandler, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    control = RoutingControl(rules or policy(), metrics, kill_switch=kill_switch)
    control.read()
    return RouterHandler(control, TOPICS, metrics, SeenTasks(100)), registry


def outputs(result: object) -> list[Outgoing]:
    """The events a routing publishes; each routing also writes its changelog entry."""
    assert isinstance(result, list)
    events = [o for o in result if isinstance(o, Outgoing)]
    entries = [o for o in result if isinstance(o, Record)]
    assert len(entries) == (1 if events else 0)
    assert all(e.topic == TOPICS.router_seen for e in entries)
    return events


async def test_an_automatic_decision_is_published_deterministically() -> None:
    route, registry = handler()
    [result] = await route([incoming(scored("a", confidence=0.98))])
    [out] = outputs(result)
    assert out.topic == TOPICS.decisions
    assert out.key == b"a"
    assert out.event.id == event_id("a", "decision")
    assert out.event.source == "tandem/router"
    assert out.event.time == SCORED_AT
    decision = out.event.data
    assert isinstance(decision, DecisionMade)
    assert (decision.outcome, decision.decided_by, decision.confidence) == ("benign", "model", 0.98)
    assert (decision.policy.name, decision.policy.version) == ("test", 3)
    assert decision.model.version == "1"
    assert decision.decided_at == SCORED_AT
    assert decision.submitted_at == SCORED_AT - timedelta(seconds=5)
    labels = {"task_type": "tumor_screening", "route": "auto", "outcome": "benign"}
    assert registry.get_sample_value("tandem_decisions_total", labels) == 1


async def test_an_uncertain_task_is_routed_to_review() -> None:
    route, registry = handler()
    [result] = await route([incoming(scored("b", confidence=0.8, priority=70))])
    [out] = outputs(result)
    assert out.topic == TOPICS.routed
    assert out.event.id == event_id("b", "routed")
    routed = out.event.data
    assert isinstance(routed, TaskRouted)
    assert (routed.route, routed.reasons, routed.qa_sample) == ("review", ["low_confidence"], False)
    assert routed.outcomes == ["benign", "malignant"]
    assert routed.review_priority == 70
    assert routed.routed_at == SCORED_AT
    assert routed.due_at == SCORED_AT + timedelta(hours=4)
    assert routed.score.confidence == 0.8
    labels = {"task_type": "tumor_screening", "route": "review", "reason": "low_confidence"}
    assert registry.get_sample_value("tandem_routes_total", labels) == 1


async def test_a_qa_sampled_decision_is_also_sent_to_review() -> None:
    route, registry = handler(policy(qa_sample_rate=1.0))
    [result] = await route([incoming(scored("c", confidence=0.999))])
    decision, review = outputs(result)
    assert decision.topic == TOPICS.decisions
    assert isinstance(decision.event.data, DecisionMade)
    assert review.topic == TOPICS.routed
    routed = review.event.data
    assert isinstance(routed, TaskRouted)
    assert (routed.route, routed.reasons, routed.qa_sample) == ("review", ["qa_sample"], True)
    assert routed.required_approvals == 1
    assert (
        registry.get_sample_value(
            "tandem_router_qa_samples_total", {"task_type": "tumor_screening"}
        )
        == 1
    )


async def test_a_blind_review_says_so_and_a_seen_one_does_not() -> None:
    route, _ = handler(policy(qa_sample_rate=1.0, blind=Blind(qa_samples=True)))
    uncertain, sampled = await route(
        [incoming(scored("u", confidence=0.8)), incoming(scored("s", confidence=0.999), 1)]
    )
    [review] = outputs(uncertain)
    _, qa_review = outputs(sampled)
    assert isinstance(review.event.data, TaskRouted) and not review.event.data.blind
    assert isinstance(qa_review.event.data, TaskRouted) and qa_review.event.data.blind


async def test_a_review_carries_the_queue_the_policy_names() -> None:
    route, _ = handler(policy(queue="screening"))
    [result] = await route([incoming(scored("q", confidence=0.8))])
    [review] = outputs(result)
    assert isinstance(review.event.data, TaskRouted) and review.event.data.queue == "screening"


async def test_critical_tasks_carry_their_approvals() -> None:
    route, _ = handler()
    [result] = await route([incoming(scored("d", critical=True, confidence=1.0))])
    [out] = outputs(result)
    assert isinstance(out.event.data, TaskRouted)
    assert (out.event.data.reasons, out.event.data.required_approvals) == (["critical"], 2)


async def test_a_duplicate_task_yields_no_second_output() -> None:
    route, registry = handler()
    first, again, other = await route(
        [
            incoming(scored("e", confidence=0.99), offset=1),
            incoming(scored("e", confidence=0.5), offset=2),  # resubmitted, scored differently
            incoming(scored("f", confidence=0.99), offset=3),
        ]
    )
    assert len(outputs(first)) == 1 and len(outputs(other)) == 1
    assert outputs(again) == []
    assert (
        registry.get_sample_value(
            "tandem_router_duplicates_total", {"task_type": "tumor_screening"}
        )
        == 1
    )


async def test_a_redelivered_record_is_routed_again_with_identical_events() -> None:
    route, _ = handler()
    record = incoming(scored("g", confidence=0.99), offset=5)
    [first] = await route([record])
    [second] = await route([record])
    [a], [b] = outputs(first), outputs(second)
    assert (a.event.id, a.event.time, a.event.value()) == (
        b.event.id,
        b.event.time,
        b.event.value(),
    )


async def test_unknown_task_types_share_one_metric_label() -> None:
    route, registry = handler()
    [result] = await route([incoming(scored("h", task_type="free-text-from-a-producer"))])
    routed = outputs(result)[0].event.data
    assert isinstance(routed, TaskRouted)
    assert routed.reasons == ["no_policy_for_task_type"]
    labels = {"task_type": "other", "route": "review", "reason": "no_policy_for_task_type"}
    assert registry.get_sample_value("tandem_routes_total", labels) == 1


async def test_the_kill_switch_sends_confident_tasks_to_people() -> None:
    route, _ = handler(kill_switch=True)
    [result] = await route([incoming(scored("k", confidence=1.0))])
    [out] = outputs(result)
    assert out.topic == TOPICS.routed
    assert isinstance(out.event.data, TaskRouted)
    assert out.event.data.reasons == ["kill_switch"]


async def test_a_breached_segment_budget_sends_that_segment_s_tasks_to_people() -> None:
    evidence = {
        "threshold": 0.9, "cases": 500, "automated": 450, "errors": 2, "upper_bound": 0.013,
        "automation_rate": 0.9, "data": "QA verdicts", "at": SCORED_AT,
    }  # fmt: skip
    data = policy().model_dump() | {"segments": ["clinic"]}
    data["task_types"]["tumor_screening"]["error_budget"] = {
        "max_error": 0.01,
        "per_segment": "clinic",
        "segments": {"north": evidence, "south": evidence},
    }
    route, _ = handler(Policy.model_validate(data))
    breach = BudgetWatch(
        task_type="tumor_screening", segment="clinic=south", policy=route.control.policy.ref,
        max_error=0.01, confidence=0.95, qa_samples=900, errors=20, upper_bound=0.03,
        breached=True, at=SCORED_AT,
    )  # fmt: skip
    route.control.follow(
        "error-budget/tumor_screening/clinic=south",
        budget_change(breach, "tandem/review-api").data,
    )
    north, south = await route(
        [
            incoming(scored("n", confidence=0.999, context={"clinic": "north"}), offset=0),
            incoming(scored("s", confidence=0.999, context={"clinic": "south"}), offset=1),
        ]
    )
    assert isinstance(outputs(north)[0].event.data, DecisionMade)
    routed = outputs(south)[0].event.data
    assert isinstance(routed, TaskRouted) and routed.reasons == ["error_budget"]


async def test_the_active_policy_version_is_exported() -> None:
    registry = CollectorRegistry()
    RouterMetrics(registry).active_policy(policy(), KillSwitch(all=True))
    assert registry.get_sample_value("tandem_router_policy_version", {"policy": "test"}) == 3
    assert registry.get_sample_value("tandem_router_kill_switch", {"task_type": "*"}) == 1


@pytest.mark.parametrize("data", [TaskSubmitted(task_id="x", task_type="t", features={})])
async def test_an_event_of_another_type_is_rejected(data: EventData) -> None:
    route, _ = handler()
    [result] = await route([incoming(data)])
    assert isinstance(result, Rejected)


async def test_a_scoring_time_with_no_due_time_after_it_is_rejected_alone() -> None:
    route, _ = handler()
    late = scored("late", confidence=0.5).model_copy(
        update={"scored_at": datetime.max.replace(tzinfo=UTC)}
    )
    results = await route([incoming(late), incoming(scored("fine", confidence=0.5), offset=1)])
    assert isinstance(results[0], Rejected) and "leaves no due time" in str(results[0])
    [out] = outputs(results[1])
    assert out.topic == TOPICS.routed


async def test_a_routing_is_remembered_on_the_changelog_partition_of_its_input() -> None:
    route, _ = handler()
    [result] = await route([incoming(scored("a", confidence=0.98), offset=42, partition=2)])
    assert isinstance(result, list)
    [entry] = [o for o in result if isinstance(o, Record)]
    assert (entry.topic, entry.partition, entry.key, entry.value) == (
        TOPICS.router_seen,
        2,
        b"a",
        b"42",
    )
