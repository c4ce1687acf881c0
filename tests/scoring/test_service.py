"""The scoring service in-process on the real broker: tasks in, scored events and dead letters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tandem_cli import dataset
from tandem_scoring.app import create_app
from tandem_scoring.registry import ModelError
from tandem_scoring.settings import ScoringSettings
from tandem_shared.envelope import event_id
from tandem_shared.events import DeadLetter, TaskScored
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import ce_headers, consume, header, produce, submit_tasks
from tests.service_utils import bearer, running

pytestmark = pytest.mark.kafka


@pytest.fixture
async def service(
    kafka_settings: KafkaSettings, topics: Topics
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = ScoringSettings(kafka=kafka_settings, batch_timeout_ms=50, retry_backoff_s=0.01)
    app = create_app(settings)
    async with running(app) as http:
        yield app, http


async def test_tasks_are_scored_and_bad_ones_dead_lettered(
    service: tuple[FastAPI, httpx.AsyncClient], kafka_settings: KafkaSettings, topics: Topics
) -> None:
    _, http = service
    bootstrap = kafka_settings.bootstrap_servers
    samples = dataset.sample_tasks(30, seed=42)
    bodies = [body for body, _ in samples]
    flawed = {**bodies[0]["features"], "mean_radius": "large"}
    bodies.append({**bodies[1], "task_id": "flawed", "features": flawed})
    await submit_tasks(bootstrap, topics.submitted, bodies)
    unknown = {"task_id": "loan-1", "task_type": "loan_application", "features": {"x": 1}}
    invalid = {"task_id": "broken", "features": {"x": 1}}
    await produce(
        bootstrap,
        topics.submitted,
        [
            (key, json.dumps(body).encode(), ce_headers("tandem.task.submitted.v1", key))
            for key, body in (("loan-1", unknown), ("broken", invalid))
        ],
    )

    records = await consume(bootstrap, topics.scored, len(bodies))
    assert len(records) == len(bodies)
    scored = {r.key.decode(): (r, TaskScored.model_validate_json(r.value)) for r in records}
    assert set(scored) == {b["task_id"] for b in bodies}
    truth = {body["task_id"]: label for body, label in samples}
    correct = 0
    for task_id, (record, event) in scored.items():
        assert header(record, "ce_specversion") == "1.0"
        assert header(record, "ce_id") == event_id(task_id, "scored")
        assert header(record, "ce_source") == "tandem/scoring"
        assert header(record, "ce_type") == "tandem.task.scored.v1"
        assert header(record, "ce_subject") == task_id
        assert header(record, "content-type") == "application/json"
        assert event.task.task_id == task_id and event.task.task_type == "tumor_screening"
        assert (event.score.model.name, event.score.model.version) == ("tumor_screening", "1")
        assert set(event.score.probabilities) == {"benign", "malignant"}
        assert event.score.prediction == max(
            event.score.probabilities, key=lambda k: event.score.probabilities[k]
        )
        assert event.score.confidence == max(event.score.probabilities.values())
        assert event.submitted_at.isoformat() == "2026-11-25T10:00:00+00:00"
        if task_id == "flawed":
            [flag] = event.score.quality_flags
            assert (flag.code, flag.feature) == ("wrong_type", "mean_radius")
        else:
            assert event.score.quality_flags == []
            correct += event.score.prediction == truth[task_id]
    assert correct / len(samples) > 0.85

    letters = await consume(bootstrap, topics.deadletter, 2)
    by_key = {r.key.decode(): DeadLetter.model_validate_json(r.value) for r in letters}
    assert set(by_key) == {"loan-1", "broken"}
    assert by_key["loan-1"].error == "no model serves task type 'loan_application'"
    assert by_key["loan-1"].service == "scoring"
    assert by_key["loan-1"].origin_topic == topics.submitted
    assert "does not match its schema" in by_key["broken"].error
    assert "task_type" in by_key["broken"].error

    metrics = (await http.get("/metrics")).text
    count = _sample(metrics, "tandem_model_confidence_count", 'model="tumor_screening"')
    assert count == len(bodies)
    assert _sample(metrics, "tandem_quality_flags_total", 'code="wrong_type"') == 1
    assert _sample(metrics, "tandem_model_inference_seconds_count", 'version="1"') >= 1


async def test_models_endpoint(service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = service
    response = await http.get("/v1/models", headers=bearer("auditor"))
    assert response.status_code == 200
    model = next(m for m in response.json() if m["name"] == "tumor_screening")
    assert (model["name"], model["version"]) == ("tumor_screening", "1")
    assert model["task_types"] == ["tumor_screening"]
    assert model["features"] == dataset.feature_names()
    assert model["metrics"]["holdout_accuracy"] > 0.95


def test_a_broken_registry_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no models in"):
        create_app(ScoringSettings(models_dir=tmp_path))


def _sample(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} with {label} not exported")
