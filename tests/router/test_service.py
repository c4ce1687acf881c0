"""The router in-process on the real broker: scored tasks in, decisions and reviews out."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tandem_policy.loader import PolicyError
from tandem_policy.policy import qa_bucket
from tandem_router.app import create_app
from tandem_router.settings import RouterSettings
from tandem_shared.envelope import Event, event_id
from tandem_shared.events import DeadLetter, DecisionMade, TaskRouted, TaskScored
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import ce_headers, consume, header, produce
from tests.policy.factories import POLICY_YAML, scored
from tests.service_utils import bearer, committed, running

Record = tuple[str | None, bytes, list[tuple[str, bytes]]]


def record(task: TaskScored) -> Record:
    event = Event.derived(task, source="tandem/scoring", subject=task.task.task_id, stage="scored")
    return (task.task.task_id, event.value(), event.headers())


def qa_task_id() -> str:
    return next(f"qa-{n}" for n in range(1000) if qa_bucket(f"qa-{n}") < 0.05)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML.replace("qa_sample_rate: 0.0", "qa_sample_rate: 0.05"))
    return path


@pytest.fixture
async def client(
    kafka_settings: KafkaSettings, topics: Topics, policy_file: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = RouterSettings(
        kafka=kafka_settings, policy_file=policy_file, batch_timeout_ms=50, retry_backoff_s=0.05
    )
    app = create_app(settings)
    async with running(app) as http:
        yield http


@pytest.mark.kafka
async def test_router_decides_routes_and_drops_duplicates(
    client: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    qa_id = qa_task_id()
    records = [
        record(scored("auto-1", confidence=0.99)),
        record(scored("review-1", confidence=0.8, prediction="malignant")),
        record(scored("critical-1", confidence=1.0, critical=True)),
        record(scored(qa_id, confidence=0.99)),
        record(scored("dup-1", confidence=0.98)),
        record(scored("dup-1", confidence=0.5)),  # submitted twice, scored differently
        ("junk", b"{not json", ce_headers("tandem.task.scored.v1", "junk")),
    ]
    bootstrap = kafka_settings.bootstrap_servers
    await produce(bootstrap, topics.scored, records)

    async def all_committed() -> None:
        while await committed(kafka_settings, "tandem-router", [topics.scored]) < len(records):
            await asyncio.sleep(0.2)

    await asyncio.wait_for(all_committed(), timeout=60)

    # Outputs are acknowledged before offsets are committed: everything is there to read.
    decisions = await consume(bootstrap, topics.decisions, 4, timeout=3)
    by_task = {d.key.decode(): DecisionMade.model_validate_json(d.value) for d in decisions}
    assert len(decisions) == 3
    assert set(by_task) == {"auto-1", "dup-1", qa_id}
    assert by_task["dup-1"].confidence == 0.98  # the first submission won
    assert all(d.decided_by == "model" and d.policy.version == 3 for d in by_task.values())
    assert {header(d, "ce_id") for d in decisions} == {event_id(t, "decision") for t in by_task}
    assert {header(d, "ce_type") for d in decisions} == {"tandem.decision.made.v1"}

    routed = await consume(bootstrap, topics.routed, 4, timeout=3)
    reviews = {r.key.decode(): TaskRouted.model_validate_json(r.value) for r in routed}
    assert len(routed) == 3
    assert reviews["review-1"].reasons == ["low_confidence"]
    assert reviews["critical-1"].required_approvals == 2
    assert reviews[qa_id].qa_sample and reviews[qa_id].reasons == ["qa_sample"]
    assert all(r.policy.name == "test" for r in reviews.values())
    assert {header(r, "ce_source") for r in routed} == {"tandem/router"}

    [letter] = await consume(bootstrap, topics.deadletter, 1)
    assert "not JSON" in DeadLetter.model_validate_json(letter.value).error

    metrics = (await client.get("/metrics")).text
    assert 'tandem_router_duplicates_total{task_type="tumor_screening"} 1.0' in metrics
    assert 'tandem_router_policy_version{policy="test"} 3.0' in metrics
    assert (
        'tandem_decisions_total{outcome="malignant",route="review",task_type="tumor_screening"} 1.0'
        in metrics
    )
    policy = (await client.get("/v1/policy", headers=bearer("auditor"))).json()
    assert (policy["name"], policy["version"]) == ("test", 3)


async def test_an_invalid_policy_stops_the_app_from_being_built(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(POLICY_YAML.replace("malignant: 0.99", "malignant: 9"))
    with pytest.raises(PolicyError) as info:
        create_app(RouterSettings(policy_file=bad))
    assert info.value.paths == ["task_types.tumor_screening.auto.malignant"]


def test_the_service_refuses_to_start_on_an_invalid_policy(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(POLICY_YAML.replace("review_due: PT4H", "review_due: tomorrow"))
    env = {**os.environ, "TANDEM_ROUTER_POLICY_FILE": str(bad), "TANDEM_ROUTER_PORT": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tandem_router"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "task_types.tumor_screening.review_due" in done.stderr
    assert "line 13" in done.stderr
    assert "Traceback" not in done.stderr


async def test_app_factory_has_the_service_shape() -> None:
    app = create_app(RouterSettings())
    assert isinstance(app, FastAPI)
    assert app.title == "Tandem router"
    assert "/v1/policy" in app.openapi()["paths"]
    assert (RouterSettings().port, RouterSettings().group_id) == (8002, "tandem-router")
