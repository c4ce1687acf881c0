"""Reviews still open at their due time follow the policy: escalate, stay pending, or the
fallback outcome; each is an SLA breach, handled once (SQLite and PostgreSQL, real broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from tandem_review_api.queue import Review, overdue_step
from tandem_review_api.reviews import ReviewService
from tandem_shared.events import DecisionMade
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import consume
from tests.review_api.apps import review_api
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed

LATE = NOW + timedelta(hours=5)  # every review below is due at NOW + 4h


@pytest.fixture
async def service(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    # Overdue reviews are handled below at a chosen time, not by the clock.
    async with review_api(kafka_settings, database_url) as service:
        yield service


@pytest.mark.kafka
async def test_each_overdue_review_is_handled_once_as_its_policy_says(
    service: tuple[httpx.AsyncClient, FastAPI], kafka_settings: KafkaSettings, topics: Topics
) -> None:
    client, app = service
    escalating = routed("late-escalate")
    staying = routed("late-pending").model_copy(update={"on_overdue": "pending"})
    falling_back = routed("late-fallback").model_copy(
        update={"on_overdue": "fallback", "fallback_outcome": "malignant", "queue": "fraud-tier2"}
    )
    on_time = routed("on-time").model_copy(update={"due_at": LATE + timedelta(hours=1)})
    await publish_routed(kafka_settings, topics, [escalating, staying, falling_back, on_time])
    await pending(client, 4, qualifications=["fraud-tier2"])
    reviews: ReviewService = app.state.reviews

    assert await reviews.handle_overdue(now=LATE) == 3
    assert await reviews.handle_overdue(now=LATE) == 0  # each breach is handled once

    senior = auth("sam", "senior")
    escalated = (await client.get("/v1/reviews?status=escalated", headers=senior)).json()
    assert [r["task_id"] for r in escalated["items"]] == ["late-escalate"]
    still = (await client.get("/v1/reviews?status=pending", headers=senior)).json()
    assert sorted(r["task_id"] for r in still["items"]) == ["late-pending", "on-time"]

    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decision = DecisionMade.model_validate_json(record.value)
    assert (decision.task_id, decision.outcome, decision.decided_by) == (
        "late-fallback",
        "malignant",
        "policy",
    )
    assert decision.overrode_model and "fallback" in (decision.rationale or "")
    task = (await client.get("/v1/tasks/late-fallback", headers=auth("app", "service"))).json()
    assert task["status"] == "decided"

    metrics = (await client.get("/metrics")).text
    for action, queue in (
        ("escalate", "(general)"),
        ("pending", "(general)"),
        ("fallback", "fraud-tier2"),
    ):
        labels = f'action="{action}",queue="{queue}",task_type="tumor_screening"'
        assert f"tandem_review_sla_breaches_total{{{labels}}} 1.0" in metrics

    # The queue as SREs see it: how many wait, and how long the oldest has (since routed).
    depth = await app.state.store.queue_depth(LATE)
    assert {status: d.count for status, d in depth.items()} == {"pending": 2, "escalated": 1}
    assert depth["pending"].oldest_age_s == (LATE - NOW).total_seconds()
    app.state.review_metrics.set_queue_depth(depth)
    metrics = (await client.get("/metrics")).text
    assert 'tandem_review_queue_depth{status="pending"} 2.0' in metrics
    assert 'tandem_review_queue_oldest_age_seconds{status="pending"} 18000.0' in metrics
    assert 'tandem_review_queue_oldest_age_seconds{status="claimed"} 0.0' in metrics


@pytest.mark.parametrize(
    ("changes", "senior_only", "step"),
    [
        ({}, False, "escalate"),
        ({}, True, "pending"),  # already with a senior: nothing higher to go to
        (
            {"qa_sample": True, "on_overdue": "fallback", "fallback_outcome": "benign"},
            False,
            "pending",
        ),
        ({"on_overdue": "fallback", "fallback_outcome": "benign"}, False, "fallback"),
        ({"on_overdue": "fallback"}, False, "escalate"),  # no outcome named: people decide
        ({"on_overdue": "pending"}, False, "pending"),
        # The two-person rule: a task that needs people is never decided by the policy.
        (
            {"on_overdue": "fallback", "fallback_outcome": "benign", "required_approvals": 2},
            False,
            "escalate",
        ),
        (
            {"on_overdue": "fallback", "fallback_outcome": "benign", "required_approvals": 2},
            True,
            "pending",
        ),
    ],
)
def test_the_overdue_step(changes: dict[str, object], senior_only: bool, step: str) -> None:
    review = Review(
        review_id="r",
        status="pending",
        routed=routed("t").model_copy(update=changes),
        claimed_by=None,
        lease_expires_at=None,
        senior_only=senior_only,
    )
    assert overdue_step(review) == step
