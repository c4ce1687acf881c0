"""The two-person rule: a critical task's decision names at least its required approvals of
distinct people who gave that outcome, whichever way the review went (pending, escalated by
the policy, by its holder or by a disagreement, or overdue)."""

from __future__ import annotations

import httpx
import pytest
from tandem_review_api.errors import Conflict
from tandem_review_api.queue import Approval, Review, next_step
from tandem_shared.auth import Principal
from tandem_shared.events import DecisionMade
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import consume
from tests.review_api.test_api import auth, publish_routed, queue_of, routed

SENIOR = Principal("sam", frozenset({"senior"}))
OTHER_SENIOR = Principal("sue", frozenset({"senior"}))
REVIEWER = Principal("bob", frozenset({"reviewer"}))


def review(*approvals: Approval, critical: bool = True, senior_only: bool = False) -> Review:
    return Review(
        review_id="r",
        status="claimed",
        routed=routed("t", critical=critical),
        claimed_by=None,
        lease_expires_at=None,
        approvals=approvals,
        senior_only=senior_only,
    )


def test_an_escalated_critical_review_needs_a_second_person_after_the_senior() -> None:
    escalated = review(senior_only=True)
    first = Approval("sam", "malignant", "seen")
    assert next_step(escalated, first, SENIOR).kind == "awaiting_approval"
    second = Approval("sue", "malignant", "agreed")
    step = next_step(review(first, senior_only=True), second, OTHER_SENIOR)
    assert (step.kind, step.outcome) == ("decided", "malignant")


def test_a_senior_settling_a_disagreement_counts_only_those_behind_the_outcome() -> None:
    split = review(
        Approval("al", "benign", "a"), Approval("bo", "malignant", "b"), senior_only=True
    )
    step = next_step(split, Approval("sam", "benign", "c"), SENIOR)
    assert (step.kind, step.outcome) == ("decided", "benign")  # al and sam
    three = split.routed.model_copy(update={"required_approvals": 3})
    wider = Review("r", "claimed", three, None, None, split.approvals, senior_only=True)
    assert next_step(wider, Approval("sam", "benign", "c"), SENIOR).kind == "awaiting_approval"


def test_one_person_approving_twice_is_one_approval() -> None:
    once = review(Approval("sam", "benign", "a"), senior_only=True)
    assert next_step(once, Approval("sam", "benign", "again"), SENIOR).kind == "awaiting_approval"


def test_only_a_senior_approves_an_escalated_review() -> None:
    with pytest.raises(Conflict):
        next_step(review(senior_only=True), Approval("bob", "benign", "x"), REVIEWER)


def test_routine_work_still_takes_one_person() -> None:
    step = next_step(review(critical=False), Approval("bob", "benign", "x"), REVIEWER)
    assert (step.kind, step.outcome) == ("decided", "benign")
    escalated = review(critical=False, senior_only=True)
    assert next_step(escalated, Approval("sam", "benign", "x"), SENIOR).kind == "decided"


@pytest.mark.kafka
async def test_one_senior_cannot_escalate_and_then_decide_a_critical_task_alone(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [routed("crit-1", critical=True)])
    sam, sue = auth("sam", "senior"), auth("sue", "senior")
    [item] = await queue_of(api, "pending", sam, 1)
    rid = item["review_id"]

    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=sam)).status_code == 200
    escalate = await api.post(f"/v1/reviews/{rid}/escalate", json={"reason": "x"}, headers=sam)
    assert escalate.status_code == 204, escalate.text
    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=sam)).status_code == 200
    alone = await api.post(
        f"/v1/reviews/{rid}/decision", json={"outcome": "malignant", "rationale": "a"}, headers=sam
    )
    assert alone.status_code == 200, alone.text
    assert (alone.json()["status"], alone.json()["approvals"]) == ("awaiting_approval", 1)
    # It waits with the seniors, for another one: sam may not take it again.
    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=sam)).status_code == 409
    [waiting] = await queue_of(api, "escalated", sue, 1)
    assert waiting["review_id"] == rid
    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=sue)).status_code == 200
    final = await api.post(
        f"/v1/reviews/{rid}/decision", json={"outcome": "malignant", "rationale": "b"}, headers=sue
    )
    assert final.json()["status"] == "decided"
    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decision = DecisionMade.model_validate_json(record.value)
    assert (decision.task_id, decision.outcome, decision.reviewers) == (
        "crit-1",
        "malignant",
        ["sam", "sue"],
    )
