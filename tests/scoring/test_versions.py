"""Live model versions on the real broker: promote a different model while tasks flow, refuse a
broken one, and start a new replica on what the control topic says."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import onnx
import pytest
from prometheus_client import CollectorRegistry
from tandem_cli import dataset
from tandem_scoring.app import create_app
from tandem_scoring.consumer import ScoringHandler
from tandem_scoring.drift import DriftChange, drift_control_event
from tandem_scoring.settings import ScoringSettings
from tandem_scoring.telemetry import ScoringMetrics
from tandem_scoring.versions import ControlHandler, LiveModels
from tandem_shared.control import ModelState, model_change, publish_change
from tandem_shared.events import TaskScored
from tandem_shared.kafka import Publisher, Rejected, make_producer
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.kafka_utils import TopicReader, submit_tasks
from tests.scoring.conftest import MODELS
from tests.scoring.test_consumer import incoming
from tests.service_utils import bearer, running

pytestmark = pytest.mark.kafka


def version(models: Path, number: str, transform: str) -> Path:
    """A copy of the reference model as another version; ``weaker`` halves its weights (a
    different model), ``broken`` is not ONNX at all."""
    target = models / "tumor_screening" / number
    shutil.copytree(MODELS / "tumor_screening" / "1", target)
    onnx_path = target / "model.onnx"
    if transform == "weaker":
        model = onnx.load(onnx_path)
        [linear] = [n for n in model.graph.node if n.op_type == "LinearClassifier"]
        [weights] = [a for a in linear.attribute if a.name == "coefficients"]
        weights.floats[:] = [w * 0.5 for w in weights.floats]
        onnx.save(model, onnx_path)
    elif transform == "broken":
        onnx_path.write_bytes(b"this is not an onnx model")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = number
    manifest["model_sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


async def promote(kafka: KafkaSettings, topics: Topics, state: ModelState) -> None:
    producer = make_producer(kafka, "admin")
    await producer.start()
    try:
        change = model_change("tumor_screening", state, "ops")
        await publish_change(Publisher(producer), topics, change, None)
    finally:
        await producer.stop()


def bodies(count: int, seed: int) -> list[dict[str, object]]:
    return [
        {**b, "task_id": f"v{seed}-{n}"}
        for n, (b, _) in enumerate(dataset.sample_tasks(count, seed))
    ]


async def test_promote_live_refuse_broken_and_restart_on_the_topic(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    version(models, "1", "same")
    version(models, "2", "weaker")
    version(models, "3", "broken")
    settings = ScoringSettings(
        kafka=kafka_settings,
        models_dir=models,
        serve={"tumor_screening": "tumor_screening/1"},
        batch_timeout_ms=20,
        batch_max_records=20,
    )
    before, during, after = bodies(60, 1), bodies(300, 2), bodies(40, 3)
    async with TopicReader(kafka_settings.bootstrap_servers, topics.scored) as scored:
        async with running(create_app(settings)) as http:
            await submit_tasks(kafka_settings.bootstrap_servers, topics.submitted, before)
            await scored.until(60)

            async def stream() -> None:
                for start in range(0, len(during), 10):
                    await submit_tasks(
                        kafka_settings.bootstrap_servers,
                        topics.submitted,
                        during[start : start + 10],
                    )
                    await asyncio.sleep(0.02)

            flowing = asyncio.create_task(stream())
            await asyncio.sleep(0.2)
            await promote(kafka_settings, topics, ModelState(live="2", previous="1"))
            await flowing
            await scored.until(360)
            for _ in range(100):
                models_now = (await http.get("/v1/models", headers=bearer("auditor"))).json()
                if [m["version"] for m in models_now] == ["2"]:
                    break
                await asyncio.sleep(0.1)
            await submit_tasks(kafka_settings.bootstrap_servers, topics.submitted, after[:20])
            await scored.until(380)

            await promote(kafka_settings, topics, ModelState(live="3", previous="2"))
            for _ in range(100):
                metrics = (await http.get("/metrics")).text
                if 'tandem_model_refused_total{model="tumor_screening"} 1.0' in metrics:
                    break
                await asyncio.sleep(0.1)
            assert 'tandem_model_refused_total{model="tumor_screening"} 1.0' in metrics
            await submit_tasks(kafka_settings.bootstrap_servers, topics.submitted, after[20:])
            await scored.until(400)

        events = [TaskScored.model_validate_json(r.value) for r in scored.records]
        by_task = {e.task.task_id: e.score.model.version for e in events}
        assert len(events) == 400, "a task was lost or scored twice"
        assert len(by_task) == 400
        assert {by_task[b["task_id"]] for b in before} == {"1"}
        assert {by_task[b["task_id"]] for b in after} == {"2"}, "the broken version was refused"
        switched = [by_task[b["task_id"]] for b in during]
        assert set(switched) <= {"1", "2"}
        assert switched[-1] == "2"

        # The same features score differently under the two versions: they are different models.
        same = {**before[0], "task_id": "again"}
        async with running(create_app(settings)):  # a new replica, configured for version 1
            await submit_tasks(kafka_settings.bootstrap_servers, topics.submitted, [same])
            await scored.until(401)
        again = TaskScored.model_validate_json(scored.records[-1].value)
        assert again.score.model.version == "2", "a new replica follows the control topic"
        first = next(e for e in events if e.task.task_id == before[0]["task_id"])
        assert again.score.probabilities != first.score.probabilities


async def test_a_refused_version_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    models = tmp_path / "models"
    version(models, "1", "same")
    version(models, "2", "weaker")
    version(models, "3", "broken")
    live = LiveModels.load(models, {"tumor_screening": "tumor_screening/1"}, threads=1)
    assert await live.apply("tumor_screening", ModelState(live="3", previous="2")) is False
    assert live.state_of("tumor_screening") == "2"
    assert await live.apply("tumor_screening", ModelState(live="1", previous="2")) is True
    assert live.state_of("tumor_screening") == "1"
    assert await live.apply("tumor_screening", ModelState(live="9", previous=None)) is False
    assert live.state_of("tumor_screening") == "1"


async def test_a_shadow_scores_beside_the_live_version_and_never_replaces_it(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    version(models, "1", "same")
    version(models, "2", "weaker")
    live = LiveModels.load(models, {"tumor_screening": "tumor_screening/1"}, threads=1)
    metrics_registry = CollectorRegistry()
    handler = ScoringHandler(live, Topics("t."), ScoringMetrics(metrics_registry))
    batch = [incoming(b, n) for n, b in enumerate(bodies(20, 5))]

    assert await live.apply("tumor_screening", ModelState(live="1", shadow="2")) is True
    results = await handler(batch)
    scored = [r[0].event.data for r in results if not isinstance(r, Rejected)]
    assert len(scored) == 20
    for data in scored:
        assert isinstance(data, TaskScored)
        assert data.score.model.version == "1"
        shadow = data.score.shadow
        assert shadow is not None and shadow.model.version == "2"
        assert shadow.agrees == (shadow.prediction == data.score.prediction)
        assert shadow.confidence_delta == pytest.approx(shadow.confidence - data.score.confidence)
        assert shadow.probabilities != data.score.probabilities
    agreed = sum(
        metrics_registry.get_sample_value(
            "tandem_shadow_scores_total",
            {"model": "tumor_screening", "version": "1", "shadow_version": "2", "agrees": a},
        )
        or 0
        for a in ("true", "false")
    )
    assert agreed == 20

    assert await live.apply("tumor_screening", ModelState(live="1")) is True
    [first] = (await handler(batch[:1]))[0]
    assert first.event.data.score.shadow is None


async def test_scoring_follows_model_states_not_drift_records(tmp_path: Path) -> None:
    models = tmp_path / "models"
    version(models, "1", "same")
    version(models, "2", "weaker")
    live = LiveModels.load(models, {"tumor_screening": "tumor_screening/1"}, threads=1)
    metrics_registry = CollectorRegistry()
    control = ControlHandler(live, ScoringMetrics(metrics_registry))
    alarm = DriftChange("tumor_screening", "1", "mean_radius", 0.4, True)
    await control.follow(drift_control_event(alarm, "scoring", datetime.now(UTC), "s-0").data)
    assert live.state_of("tumor_screening") == "1"
    assert metrics_registry.get_sample_value(
        "tandem_model_refused_total", {"model": "tumor_screening"}
    ) in (None, 0.0)
    await control.follow(model_change("tumor_screening", ModelState(live="2"), "ops").data)
    assert live.state_of("tumor_screening") == "2"
