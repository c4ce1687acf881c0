"""Time on task: each approval records when its claim began, when it was given and the time
worked in between (the claim and heartbeats, a long gap counted as away), and the outcomes
report's time saved uses that measured time, the fixed minutes only where none was."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from tandem_review_api.queue import ClaimLimits, Review, active_after
from tandem_review_api.stats import report
from tandem_shared.auth import Principal
from tandem_shared.events import DecisionMade, FeedbackRecorded
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import consume
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed
from tests.review_api.test_stats import decided, facts

AWAY = timedelta(minutes=2)
LIMITS = ClaimLimits(timedelta(minutes=5), timedelta(hours=1), per_reviewer=5, away_after=AWAY)
ALICE, BOB = Principal("alice", frozenset({"reviewer"})), Principal("bob", frozenset({"reviewer"}))


def claimed(active_seconds: float | None, active_at: timedelta | None, by: str = "alice") -> Review:
    return Review(
        "r",
        "claimed",
        routed("t"),
        by,
        NOW + timedelta(minutes=5),
        claimed_at=NOW,
        active_seconds=active_seconds,
        active_at=None if active_at is None else NOW + active_at,
    )


def test_time_on_task_counts_the_gaps_between_signs_of_work_up_to_away() -> None:
    review = claimed(30.0, timedelta(seconds=30))
    assert active_after(review, NOW + timedelta(seconds=90), AWAY) == 90.0
    # Ten minutes without a heartbeat: away, so two of them count.
    assert active_after(review, NOW + timedelta(minutes=10, seconds=30), AWAY) == 150.0
    assert active_after(claimed(None, None), NOW, AWAY) is None  # a claim from before it counted


def test_a_heartbeat_counts_on_and_a_new_claim_starts_from_nothing() -> None:
    review = claimed(30.0, timedelta(seconds=30))
    later = NOW + timedelta(seconds=60)
    assert LIMITS.active(review, ALICE, later) == 60.0
    assert LIMITS.active(review, BOB, later) == 0.0  # bob's claim, once alice's lapsed
    assert LIMITS.active(claimed(None, None), ALICE, later) == 0.0


def test_time_saved_uses_the_measured_time_per_review() -> None:
    automatic = [decided(n, "model", 1) for n in range(6)]
    window = (NOW, NOW + timedelta(days=1), "none", 4.0)
    [assumed] = report(automatic, [facts(("benign",))], *window).groups
    assert (assumed.minutes_per_review, assumed.minutes_per_review_measured_from) == (4.0, 0)
    assert assumed.reviewer_hours_saved == 0.4  # 6 × 4 minutes
    timed = [facts(("benign",), active_seconds=(90.0,)), facts(("benign",), active_seconds=(30.0,))]
    [measured] = report(automatic, timed, *window).groups
    assert (measured.minutes_per_review, measured.minutes_per_review_measured_from) == (1.0, 2)
    assert measured.reviewer_hours_saved == 0.1  # 6 × 1 minute


async def test_each_approver_s_time_on_task_goes_with_the_decision(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [routed("tt-1", critical=True)])
    [item] = await pending(api, 1)
    rid = item["review_id"]
    for name in ("alice", "bob"):
        who = auth(name, "reviewer")
        assert (await api.post(f"/v1/reviews/{rid}/claim", headers=who)).status_code == 200
        await asyncio.sleep(0.3)
        assert (await api.post(f"/v1/reviews/{rid}/heartbeat", headers=who)).status_code == 200
        await asyncio.sleep(0.3)
        body = {"outcome": "benign", "rationale": "seen"}
        answer = await api.post(f"/v1/reviews/{rid}/decision", json=body, headers=who)
        assert answer.status_code == 200, answer.text
    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decision = DecisionMade.model_validate_json(record.value)
    assert [t.reviewer for t in decision.review_times] == ["alice", "bob"]
    for t in decision.review_times:
        assert t.claimed_at is not None and t.claimed_at < t.decided_at
        assert t.active_seconds is not None
        # Counted to the millisecond: never more than the claim lasted.
        assert 0.5 <= t.active_seconds <= (t.decided_at - t.claimed_at).total_seconds() + 1e-3
    feedback = [
        FeedbackRecorded.model_validate_json(r.value)
        for r in await consume(kafka_settings.bootstrap_servers, topics.feedback, 2)
    ]
    assert [f.active_seconds for f in feedback] == [t.active_seconds for t in decision.review_times]

    window = {"since": (NOW - timedelta(days=1)).isoformat(), "group_by": "none"}
    window["until"] = (NOW + timedelta(days=1)).isoformat()
    [group] = (await api.get("/v1/stats", params=window, headers=auth("sam", "senior"))).json()[
        "groups"
    ]
    assert group["minutes_per_review_measured_from"] == 2
    measured = sum(t.active_seconds or 0 for t in decision.review_times) / 2 / 60
    assert group["minutes_per_review"] == pytest.approx(measured, abs=0.01)
    metrics = (await api.get("/metrics")).text
    assert 'tandem_review_active_seconds_count{task_type="tumor_screening"} 2.0' in metrics

    # Each reviewer's own day: one approval, with the model, at their measured time.
    mine = (await api.get("/v1/me/today", headers=auth("alice", "reviewer"))).json()
    alice = decision.review_times[0].active_seconds
    assert (mine["approvals"], mine["agreed_with_model"], mine["flags"]) == (1, 1.0, 0)
    assert mine["seconds_per_review"] == pytest.approx(alice, abs=0.05)
    nobody = (await api.get("/v1/me/today", headers=auth("carl", "reviewer"))).json()
    assert (nobody["approvals"], nobody["agreed_with_model"]) == (0, None)
