"""Blind first look: a blind review shows its reader no model view until they record their
own verdict; the verdict before and the approval after travel with the decision and the
feedback, and the outcomes report tells how often people switched to the model."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from rich.console import Console
from tandem_cli.report import bias_table
from tandem_review_api.errors import Conflict
from tandem_review_api.queue import Approval, Review, check_decision, first_looks_of
from tandem_review_api.stats import BlindVerdict, automation_bias
from tandem_shared.auth import Principal
from tandem_shared.envelope import Event
from tandem_shared.events import DecisionMade, FeedbackRecorded, FirstLook, TaskRouted
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import consume
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed
from tests.review_api.test_stats import facts
from tests.service_utils import eventually, publish_events

ALICE = Principal("alice", frozenset({"reviewer"}))
WINDOW = {
    "since": (NOW - timedelta(days=1)).isoformat(),
    "until": (NOW + timedelta(days=1)).isoformat(),
}
MODEL_VIEW = ("prediction", "confidence", "probabilities", "explanation")


def blind(task_id: str, **options: Any) -> TaskRouted:
    return routed(task_id, **options).model_copy(update={"blind": True})


def held(routed_task: TaskRouted, *approvals: Approval) -> Review:
    return Review("r", "claimed", routed_task, "alice", NOW + timedelta(minutes=5), approvals)


def test_a_blind_review_is_decided_only_after_a_first_look() -> None:
    with pytest.raises(Conflict, match="first look"):
        check_decision(held(blind("t")), ALICE, "benign", NOW, {})
    with pytest.raises(Conflict, match="first look"):
        check_decision(held(blind("t")), ALICE, "benign", NOW, {"bob": "benign"})
    check_decision(held(blind("t")), ALICE, "benign", NOW, {"alice": "malignant"})
    check_decision(held(routed("t")), ALICE, "benign", NOW, {})  # not blind: as before


def test_each_approver_of_a_blind_review_is_named_with_both_verdicts() -> None:
    bob = Approval("bob", "benign", "agree")
    review = held(blind("t", critical=True), bob)
    looks = first_looks_of(
        review, Approval("alice", "benign", "seen"), {"bob": "benign", "alice": "malignant"}
    )
    assert looks == [
        FirstLook(reviewer="bob", before="benign", after="benign", changed=False),
        FirstLook(reviewer="alice", before="malignant", after="benign", changed=True),
    ]
    # An approver who gave no first look (the review was made blind later) is not named.
    assert first_looks_of(review, Approval("alice", "benign", "x"), {"alice": "benign"}) == [
        FirstLook(reviewer="alice", before="benign", after="benign", changed=False)
    ]


def test_the_automation_bias_report_counts_switches_to_the_model() -> None:
    # The model said benign each time (facts' prediction).
    reviews = [
        facts(("benign",), first_looks=(BlindVerdict("al", "malignant", "benign"),)),
        facts(("malignant",), first_looks=(BlindVerdict("al", "malignant", "malignant"),)),
        facts(("benign",), first_looks=(BlindVerdict("al", "benign", "benign"),)),
        facts(("benign",), first_looks=(BlindVerdict("bo", "benign", "benign"),)),
        facts(("benign",)),  # not blind: not counted
    ]
    al, bo = automation_bias(reviews)
    assert (al.reviewer, al.task_type, al.model, al.first_looks) == (
        "al",
        "tumor_screening",
        "tumor_screening/1",
        3,
    )
    assert al.agreement_before_reveal == pytest.approx(1 / 3)
    assert al.agreement_after_reveal == pytest.approx(2 / 3)
    assert al.changed_after_reveal == pytest.approx(1 / 3)
    assert (al.switched_to_model, al.switched_to_model_rate) == (1, 0.5)
    assert (bo.first_looks, bo.switched_to_model, bo.switched_to_model_rate) == (1, 0, None)


async def first_look(
    api: httpx.AsyncClient, rid: str, outcome: str, who: dict[str, str]
) -> httpx.Response:
    return await api.post(f"/v1/reviews/{rid}/first-look", json={"outcome": outcome}, headers=who)


async def test_a_blind_review_shows_the_model_only_after_the_first_look(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [blind("b-1"), routed("s-1")])
    alice, bob = auth("alice", "reviewer"), auth("bob", "reviewer")
    items = {i["task_id"]: i for i in await pending(api, 2)}
    seen, masked = items["s-1"], items["b-1"]
    assert (seen["blind"], seen["revealed"], seen["prediction"]) == (False, True, "benign")
    assert (masked["blind"], masked["revealed"]) == (True, False)
    assert [masked[k] for k in MODEL_VIEW] == [None] * 4
    assert masked["reasons"] == []  # "low_confidence" tells what the model said
    assert masked["features"] == {"mean_radius": 14.2}  # the case itself is there
    rid = masked["review_id"]
    one = (await api.get(f"/v1/reviews/{rid}", headers=alice)).json()
    assert [one[k] for k in MODEL_VIEW] == [None] * 4
    # The case in context is not the model's view: its features' ranges are shown blind.
    assert one["feature_ranges"][0]["standing"] == "typical"
    admin = (await api.get(f"/v1/reviews/{rid}", headers=auth("ada", "admin"))).json()
    assert (admin["revealed"], admin["prediction"]) == (False, None)  # an admin decides too
    # An auditor decides nothing: they see everything.
    audited = (await api.get(f"/v1/reviews/{rid}", headers=auth("ivy", "auditor"))).json()
    assert (audited["revealed"], audited["prediction"]) == (True, "benign")

    assert (await first_look(api, rid, "malignant", alice)).status_code == 409  # not held
    claimed = await api.post(f"/v1/reviews/{rid}/claim", headers=alice)
    assert (claimed.status_code, claimed.json()["blind"]) == (200, True)  # a first look is due
    early = await api.post(
        f"/v1/reviews/{rid}/decision", json={"outcome": "benign", "rationale": "r"}, headers=alice
    )
    assert early.status_code == 409 and "first look" in early.json()["detail"]
    assert (await first_look(api, rid, "unsure", alice)).status_code == 422
    assert (await first_look(api, rid, "malignant", bob)).status_code == 409  # alice holds it
    not_blind = (await pending(api, 1))[0]["review_id"]
    seen = await api.post(f"/v1/reviews/{not_blind}/claim", headers=bob)
    assert (seen.status_code, seen.json()["blind"]) == (200, False)
    refused = await first_look(api, not_blind, "benign", bob)
    assert refused.status_code == 409 and "not blind" in refused.json()["detail"]

    revealed = await first_look(api, rid, "malignant", alice)
    assert revealed.status_code == 200, revealed.text
    shown = revealed.json()
    assert (shown["revealed"], shown["prediction"], shown["confidence"]) == (True, "benign", 0.8)
    assert shown["reasons"] == ["low_confidence"]
    assert shown["feature_ranges"] == one["feature_ranges"]
    again = await first_look(api, rid, "benign", alice)
    assert again.status_code == 409 and "already" in again.json()["detail"]
    assert (await api.get(f"/v1/reviews/{rid}", headers=alice)).json()["prediction"] == "benign"

    # Alice saw the model's view and switched to it.
    done = await api.post(
        f"/v1/reviews/{rid}/decision",
        json={"outcome": "benign", "rationale": "on reflection"},
        headers=alice,
    )
    assert done.json()["status"] == "decided"
    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decision = DecisionMade.model_validate_json(record.value)
    assert decision.first_looks == [
        FirstLook(reviewer="alice", before="malignant", after="benign", changed=True)
    ]
    [fb] = await consume(kafka_settings.bootstrap_servers, topics.feedback, 1)
    feedback = FeedbackRecorded.model_validate_json(fb.value)
    assert (feedback.first_look, feedback.changed_after_reveal, feedback.label) == (
        "malignant",
        True,
        "benign",
    )

    report = (await api.get("/v1/stats", params=WINDOW, headers=auth("sam", "senior"))).json()
    [row] = report["automation_bias"]
    assert (row["reviewer"], row["model"], row["first_looks"]) == ("alice", "tumor_screening/1", 1)
    assert (row["agreement_before_reveal"], row["agreement_after_reveal"]) == (0.0, 1.0)
    assert (row["switched_to_model"], row["switched_to_model_rate"]) == (1, 1.0)
    metrics = (await api.get("/metrics")).text
    switched = 'after="agreed",before="disagreed",task_type="tumor_screening"'
    assert f"tandem_blind_approvals_total{{{switched}}} 1.0" in metrics


async def test_a_blind_qa_sample_hides_the_models_decision_until_the_first_look(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    sample = blind("q-1", qa=True)
    automatic = DecisionMade(
        task_id="q-1",
        task_type="tumor_screening",
        outcome="benign",
        decided_by="model",
        confidence=0.8,
        model=sample.score.model,
        policy=sample.policy,
        submitted_at=NOW,
        decided_at=NOW,
    )
    event = Event.derived(automatic, source="tandem/router", subject="q-1", stage="decision")
    await publish_events(kafka_settings, [Outgoing(topics.decisions, event)])
    await publish_routed(kafka_settings, topics, [sample])
    # An admin may decide reviews too, so only an auditor watches the decision arrive.
    auditor, carol = auth("ivy", "auditor"), auth("carol", "reviewer")

    async def decided() -> bool:
        answer = await api.get("/v1/tasks/q-1", headers=auditor)
        return answer.status_code == 200 and answer.json()["decision"] is not None

    await eventually(decided, "the model's decision of q-1")
    [item] = await pending(api, 1, "carol")
    assert (await api.get("/v1/tasks/q-1", headers=carol)).json()["decision"] is None
    rid = item["review_id"]
    claimed = (await api.post("/v1/reviews/next", headers=carol)).json()
    assert (claimed["review_id"], claimed["blind"]) == (rid, True)
    assert (await first_look(api, rid, "benign", carol)).status_code == 200
    task = (await api.get("/v1/tasks/q-1", headers=carol)).json()
    assert task["decision"]["outcome"] == "benign"
    done = await api.post(
        f"/v1/reviews/{rid}/decision",
        json={"outcome": "benign", "rationale": "agree"},
        headers=carol,
    )
    assert done.json()["status"] == "decided"
    [fb] = await consume(kafka_settings.bootstrap_servers, topics.feedback, 1)
    feedback = FeedbackRecorded.model_validate_json(fb.value)
    assert (feedback.qa_sample, feedback.first_look, feedback.changed_after_reveal) == (
        True,
        "benign",
        False,
    )


def test_tandem_report_prints_the_blind_reviews_table() -> None:
    [row] = automation_bias([facts(("benign",), first_looks=(BlindVerdict("al", "x", "benign"),))])
    console = Console(record=True, width=160)
    console.print(bias_table([row.model_dump()]))
    text = console.export_text()
    assert "al" in text and "tumor_screening/1" in text
    # agreed before 0%, after 100%, changed 100%, one switch of one disagreement
    assert "0.0%" in text and "1 (100.0%)" in text


async def test_an_escalated_blind_review_stays_blind_to_the_senior_who_takes_it(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    """Two people disagree on a blind critical review, so it goes to a senior midway; the
    senior sees it blind too, gives a verdict first, and every approver's two verdicts travel
    with the decision. A review escalated by its holder after their first look is blind to
    the senior alike."""
    await publish_routed(kafka_settings, topics, [blind("bx-1", critical=True), blind("bx-2")])
    items = {i["task_id"]: i["review_id"] for i in await pending(api, 2)}
    rid = items["bx-1"]
    alice, bob, sam = auth("alice", "reviewer"), auth("bob", "reviewer"), auth("sam", "senior")
    decision = f"/v1/reviews/{rid}/decision"
    for who, verdict in ((alice, "malignant"), (bob, "benign")):
        assert (await api.post(f"/v1/reviews/{rid}/claim", headers=who)).status_code == 200
        assert (await first_look(api, rid, verdict, who)).status_code == 200
        approved = await api.post(
            decision, json={"outcome": verdict, "rationale": "r"}, headers=who
        )
        assert approved.status_code == 200
    assert approved.json()["status"] == "escalated"  # they disagree: a senior decides

    seen = (await api.get(f"/v1/reviews/{rid}", headers=sam)).json()
    assert (seen["status"], seen["revealed"], seen["prediction"]) == ("escalated", False, None)
    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=sam)).json()["blind"]
    early = await api.post(decision, json={"outcome": "malignant", "rationale": "r"}, headers=sam)
    assert early.status_code == 409 and "first look" in early.json()["detail"]
    assert (await first_look(api, rid, "benign", sam)).json()["prediction"] == "benign"
    done = await api.post(decision, json={"outcome": "malignant", "rationale": "r"}, headers=sam)
    assert (done.json()["status"], done.json()["outcome"]) == ("decided", "malignant")
    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decided = DecisionMade.model_validate_json(record.value)
    assert (decided.outcome, decided.reviewers) == ("malignant", ["alice", "bob", "sam"])
    assert decided.first_looks == [
        FirstLook(reviewer="alice", before="malignant", after="malignant", changed=False),
        FirstLook(reviewer="bob", before="benign", after="benign", changed=False),
        FirstLook(reviewer="sam", before="benign", after="malignant", changed=True),
    ]

    # Escalated by its holder after a first look: the senior still looks blind first.
    other = items["bx-2"]
    assert (await api.post(f"/v1/reviews/{other}/claim", headers=alice)).status_code == 200
    assert (await first_look(api, other, "benign", alice)).status_code == 200
    escalated = await api.post(
        f"/v1/reviews/{other}/escalate", json={"reason": "unsure"}, headers=alice
    )
    assert escalated.status_code == 204
    handed = (await api.get(f"/v1/reviews/{other}", headers=sam)).json()
    assert (handed["status"], handed["revealed"], handed["confidence"]) == (
        "escalated",
        False,
        None,
    )
