"""The review API in-process on the real broker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tandem_shared.auth import mint_token
from tandem_shared.envelope import Event
from tandem_shared.events import (
    DecisionMade,
    FeedbackRecorded,
    ModelRef,
    PolicyRef,
    Score,
    TaskRouted,
    TaskSubmitted,
)
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import consume, header
from tests.service_utils import publish_events

pytestmark = pytest.mark.kafka
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def routed(
    task_id: str,
    *,
    critical: bool = False,
    qa: bool = False,
    priority: int = 50,
    escalate: bool = False,
) -> TaskRouted:
    return TaskRouted(
        task=TaskSubmitted(
            task_id=task_id,
            task_type="tumor_screening",
            features={"mean_radius": 14.2},
            context={"clinic": "north"},
            critical=critical,
        ),
        score=Score(
            model=ModelRef(name="tumor_screening", version="1"),
            prediction="benign",
            probabilities={"benign": 0.8, "malignant": 0.2},
            confidence=0.8,
        ),
        route="escalate" if escalate else "review",
        reasons=["critical"] if critical else (["qa_sample"] if qa else ["low_confidence"]),
        policy=PolicyRef(name="default", version=1),
        qa_sample=qa,
        required_approvals=2 if critical else 1,
        outcomes=["benign", "malignant"],
        review_priority=priority,
        due_at=NOW + timedelta(hours=4),
        submitted_at=NOW,
        routed_at=NOW,
    )


async def publish_routed(kafka: KafkaSettings, topics: Topics, items: list[TaskRouted]) -> None:
    await publish_events(
        kafka,
        [
            Outgoing(
                topics.routed,
                Event.derived(r, source="tandem/router", subject=r.task.task_id, stage="routed"),
            )
            for r in items
        ],
    )


def auth(subject: str, *roles: str, qualifications: Sequence[str] = ()) -> dict[str, str]:
    minted = mint_token(RuntimeSettings(), subject, list(roles), qualifications=[*qualifications])
    return {"Authorization": f"Bearer {minted}"}


async def pending(
    client: httpx.AsyncClient, count: int, who: str = "alice", qualifications: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The pending reviews ``who`` (a reviewer of those queues) sees, once there are ``count``."""
    reader = auth(who, "reviewer", qualifications=qualifications)
    for _ in range(300):
        page = (await client.get("/v1/reviews?status=pending", headers=reader)).json()
        if len(page["items"]) >= count:
            return list(page["items"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} pending reviews")


async def test_claim_decide_and_publish(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [routed("t-1", priority=80), routed("t-2")])
    items = await pending(api, 2)
    assert [i["task_id"] for i in items] == ["t-1", "t-2"]  # priority first
    first = items[0]
    assert first["features"] == {"mean_radius": 14.2}
    assert first["context"] == {"clinic": "north"}
    assert first["prediction"] == "benign"
    assert first["confidence"] == 0.8
    assert first["reasons"] == ["low_confidence"]
    assert first["outcomes"] == ["benign", "malignant"]
    rid = first["review_id"]

    denied = await api.post(
        f"/v1/reviews/{rid}/decision",
        json={"outcome": "malignant", "rationale": "x"},
        headers=auth("alice", "reviewer"),
    )
    assert denied.status_code == 409, denied.text

    claim = await api.post(f"/v1/reviews/{rid}/claim", headers=auth("alice", "reviewer"))
    assert claim.status_code == 200, claim.text
    assert claim.json()["claimed_by"] == "alice"
    assert datetime.fromisoformat(claim.json()["lease_expires_at"]) > datetime.now(UTC)

    taken = await api.post(f"/v1/reviews/{rid}/claim", headers=auth("bob", "reviewer"))
    assert taken.status_code == 409
    assert "alice" in taken.json()["detail"]
    not_mine = await api.post(
        f"/v1/reviews/{rid}/decision",
        json={"outcome": "benign", "rationale": "x"},
        headers=auth("bob", "reviewer"),
    )
    assert not_mine.status_code == 409

    bad = await api.post(
        f"/v1/reviews/{rid}/decision",
        json={"outcome": "maybe", "rationale": "x"},
        headers=auth("alice", "reviewer"),
    )
    assert bad.status_code == 422
    assert "maybe" in bad.json()["detail"]

    ok = await api.post(
        f"/v1/reviews/{rid}/decision",
        json={"outcome": "malignant", "rationale": "irregular margins"},
        headers=auth("alice", "reviewer"),
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "decided"

    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decision = DecisionMade.model_validate_json(record.value)
    assert decision.task_id == "t-1"
    assert decision.decided_by == "human"
    assert decision.outcome == "malignant"
    assert decision.reviewers == ["alice"]
    assert decision.overrode_model is True
    assert decision.rationale == "irregular margins"
    assert header(record, "ce_type") == "tandem.decision.made.v1"
    [fb] = await consume(kafka_settings.bootstrap_servers, topics.feedback, 1)
    feedback = FeedbackRecorded.model_validate_json(fb.value)
    assert (feedback.label, feedback.prediction, feedback.agreed) == ("malignant", "benign", False)

    again = await api.post(f"/v1/reviews/{rid}/claim", headers=auth("bob", "reviewer"))
    assert again.status_code == 409
    for _ in range(100):
        task = (await api.get("/v1/tasks/t-1", headers=auth("app", "service"))).json()
        if task["status"] == "decided":
            break
        await asyncio.sleep(0.1)
    assert task["status"] == "decided"
    assert task["decision"]["outcome"] == "malignant"


async def test_critical_needs_two_different_reviewers(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [routed("c-1", critical=True)])
    [item] = await pending(api, 1)
    rid = item["review_id"]
    assert item["required_approvals"] == 2
    alice, bob = auth("alice", "reviewer"), auth("bob", "reviewer")
    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=alice)).status_code == 200
    first = await api.post(
        f"/v1/reviews/{rid}/decision", json={"outcome": "benign", "rationale": "a"}, headers=alice
    )
    assert first.json()["status"] == "awaiting_approval"
    assert (
        await api.post(f"/v1/reviews/{rid}/claim", headers=alice)
    ).status_code == 409  # not twice
    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=bob)).status_code == 200
    second = await api.post(
        f"/v1/reviews/{rid}/decision", json={"outcome": "benign", "rationale": "b"}, headers=bob
    )
    assert second.json()["status"] == "decided"
    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    assert DecisionMade.model_validate_json(record.value).reviewers == ["alice", "bob"]


async def test_qa_sample_verdict_is_feedback_only(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(kafka_settings, topics, [routed("q-1", qa=True)])
    [item] = await pending(api, 1)
    who = auth("carol", "reviewer")
    await api.post(f"/v1/reviews/{item['review_id']}/claim", headers=who)
    done = await api.post(
        f"/v1/reviews/{item['review_id']}/decision",
        json={"outcome": "benign", "rationale": "agree"},
        headers=who,
    )
    assert done.json()["status"] == "decided"
    [fb] = await consume(kafka_settings.bootstrap_servers, topics.feedback, 1)
    assert FeedbackRecorded.model_validate_json(fb.value).qa_sample is True
    assert await consume(kafka_settings.bootstrap_servers, topics.decisions, 1, timeout=2) == []


async def test_http_ingress_publishes_once(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    body = {"task_id": "h-1", "task_type": "tumor_screening", "features": {"mean_radius": 12.0}}
    svc = auth("producer", "service")
    first = await api.post("/v1/tasks", json=body, headers=svc)
    assert first.status_code == 202
    second = await api.post("/v1/tasks", json=body, headers=svc)
    assert second.status_code == 200
    assert second.json()["status"] == "already_submitted"
    assert (await api.post("/v1/tasks", json={"task_id": "h-2"}, headers=svc)).status_code == 422
    assert (
        await api.post("/v1/tasks", json=body, headers=auth("alice", "reviewer"))
    ).status_code == 403
    records = await consume(kafka_settings.bootstrap_servers, topics.submitted, 2, timeout=3)
    assert [r.key for r in records] == [b"h-1"]
    assert TaskSubmitted.model_validate_json(records[0].value).task_id == "h-1"


async def test_broken_tokens_get_401(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/reviews")).status_code == 401
    assert (
        await api.get("/v1/reviews", headers={"Authorization": "Bearer nonsense"})
    ).status_code == 401
    other = RuntimeSettings(jwt_secret="another-secret-of-sufficient-length-000")  # type: ignore[arg-type]
    forged = mint_token(other, "mallory", ["admin"])
    assert (
        await api.get("/v1/reviews", headers={"Authorization": f"Bearer {forged}"})
    ).status_code == 401
    assert (await api.post("/v1/reviews/next", headers=auth("ann", "auditor"))).status_code == 403


async def queue_of(
    client: httpx.AsyncClient, status: str, who: dict[str, str], count: int
) -> list[dict[str, Any]]:
    for _ in range(300):
        items = (await client.get(f"/v1/reviews?status={status}", headers=who)).json()["items"]
        if len(items) >= count:
            return list(items)
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} {status} reviews")


async def test_escalated_work_goes_to_seniors(
    api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    await publish_routed(
        kafka_settings, topics, [routed("e-1", escalate=True), routed("d-1", critical=True)]
    )
    alice, bob, sam = auth("alice", "reviewer"), auth("bob", "reviewer"), auth("sam", "senior")
    [escalated] = await queue_of(api, "escalated", sam, 1)
    assert escalated["task_id"] == "e-1"
    [pending_item] = await queue_of(api, "pending", alice, 1)
    assert pending_item["task_id"] == "d-1"
    assert (
        await api.post(f"/v1/reviews/{escalated['review_id']}/claim", headers=alice)
    ).status_code == 409

    # Two reviewers disagree on a critical task: it escalates and a senior settles it.
    rid = pending_item["review_id"]
    await api.post(f"/v1/reviews/{rid}/claim", headers=alice)
    await api.post(
        f"/v1/reviews/{rid}/decision", json={"outcome": "benign", "rationale": "a"}, headers=alice
    )
    await api.post(f"/v1/reviews/{rid}/claim", headers=bob)
    split = await api.post(
        f"/v1/reviews/{rid}/decision", json={"outcome": "malignant", "rationale": "b"}, headers=bob
    )
    assert split.json()["status"] == "escalated"
    assert {i["task_id"] for i in await queue_of(api, "escalated", sam, 2)} == {"e-1", "d-1"}
    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=alice)).status_code == 409
    assert (await api.post(f"/v1/reviews/{rid}/claim", headers=sam)).status_code == 200
    final = await api.post(
        f"/v1/reviews/{rid}/decision", json={"outcome": "malignant", "rationale": "c"}, headers=sam
    )
    assert final.json()["status"] == "decided"
    [record] = await consume(kafka_settings.bootstrap_servers, topics.decisions, 1)
    decision = DecisionMade.model_validate_json(record.value)
    assert (decision.task_id, decision.outcome) == ("d-1", "malignant")
    assert decision.reviewers == ["alice", "bob", "sam"]
