"""The improvement loop through the command line and the real broker: labels from tandem.feedback,
a retrained version recorded on the control topic with its data, validation, a gated promotion
that records its evidence, and live against shadow on scored traffic."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tandem_cli.main import app
from tandem_scoring.registry import read_manifest
from tandem_shared.control import ModelState, model_state, read_control
from tandem_shared.envelope import Event
from tandem_shared.events import (
    FeedbackRecorded,
    ModelRef,
    PolicyRef,
    Score,
    ShadowScore,
    TaskScored,
    TaskSubmitted,
)
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics
from typer.testing import CliRunner

from tests.cli.test_improvement import ROOT, labelled
from tests.service_utils import OPEN_TRUST, publish_events

pytest.importorskip("skl2onnx", reason="the models dependency group is not installed")
pytestmark = pytest.mark.kafka
LIVE = ModelRef(name="tumor_screening", version="1")
POLICY = PolicyRef(name="default", version=1)


def feedback(row: dict[str, object]) -> Event[FeedbackRecorded]:
    features = {
        k: v for k, v in row.items() if k not in {"task_id", "task_type", "label", "labelled_at"}
    }
    data = FeedbackRecorded(
        task_id=str(row["task_id"]),
        task_type=str(row["task_type"]),
        features=features,
        model=LIVE,
        prediction="benign",
        probabilities={"benign": 0.9, "malignant": 0.1},
        confidence=0.9,
        label=str(row["label"]),
        reviewer="alice",
        qa_sample=True,
        agreed=row["label"] == "benign",
        policy=POLICY,
        labelled_at=row["labelled_at"],  # type: ignore[arg-type]
    )
    return Event.derived(data, source="tests/review-api", subject=data.task_id, stage="feedback")


async def run(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result.exit_code, result.output


async def test_retrain_validate_and_promote_through_the_topics(
    kafka_settings: KafkaSettings,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("TANDEM_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models)
    rows = labelled(1000, seed=21)
    await publish_events(kafka_settings, [Outgoing(topics.feedback, feedback(r)) for r in rows])
    cut = rows[599]["labelled_at"]
    assert isinstance(cut, datetime)

    code, out = await run(
        "model", "retrain", "--model", "tumor_screening", "--models-dir", str(models),
        "--until", cut.isoformat(),
    )  # fmt: skip
    assert code == 0, out
    assert "tumor_screening version 2:" in out and "600 of them labelled by people" in out
    manifest = read_manifest(models / "tumor_screening" / "2")
    changes = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
    registered = changes["model-registry/tumor_screening/2"]
    assert registered.kind == "model_registry"
    assert registered.value["dataset"]["fingerprint"] == manifest.dataset.fingerprint
    assert registered.value["feedback"]["rows"] == 600
    assert registered.value["feedback"]["source"] == topics.feedback
    # retraining promotes nothing; it pins what serves, so a restart cannot serve version 2
    assert model_state(changes, "tumor_screening") == ModelState(live="1")

    report = tmp_path / "reports" / "v2"
    code, out = await run(
        "model", "validate", "--model", "tumor_screening", "--candidate", "2", "--live", "1",
        "--policy", str(ROOT / "deploy" / "local" / "policy.yaml"),
        "--models-dir", str(models), "--report", str(report),
    )  # fmt: skip
    assert code == 0, out
    assert "400 held-out tasks" in out
    assert "the gate would pass version 2" in out
    assert "# tumor_screening: version 2 against live 1" in report.with_suffix(".md").read_text()

    code, out = await run(
        "model", "promote", "tumor_screening", "2", "--evidence", str(report.with_suffix(".json"))
    )
    assert code == 0, out
    changes = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
    assert model_state(changes, "tumor_screening") == ModelState(live="2", previous="1")
    promoted = changes["model-registry/tumor_screening/2"].value
    evidence = json.loads(report.with_suffix(".json").read_text())
    assert promoted["evidence"] == evidence
    assert promoted["override_reason"] is None


def scored(n: int, shadow_agrees: bool, delta: float) -> Event[TaskScored]:
    now = datetime.now(UTC)
    task = TaskSubmitted(task_id=f"s-{n}", task_type="tumor_screening", features={"x": 1.0})
    shadow = ShadowScore(
        model=ModelRef(name="tumor_screening", version="2"),
        prediction="benign" if shadow_agrees else "malignant",
        probabilities={},
        confidence=0.8 + delta,
        agrees=shadow_agrees,
        confidence_delta=delta,
    )
    score = Score(model=LIVE, prediction="benign", probabilities={}, confidence=0.8, shadow=shadow)
    data = TaskScored(task=task, score=score, submitted_at=now, scored_at=now)
    return Event.derived(data, source="tests/scoring", subject=task.task_id, stage="scored")


async def test_compare_reads_live_against_shadow_on_live_traffic(
    kafka_settings: KafkaSettings, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("TANDEM_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    traffic = [scored(1, True, 0.05), scored(2, True, 0.05), scored(3, False, -0.1)]
    traffic.append(scored(4, False, -0.1))
    now = datetime.now(UTC) - timedelta(minutes=1)
    people = [
        {"task_id": "s-1", "task_type": "tumor_screening", "x": 1.0, "label": "benign",
         "labelled_at": now},
        {"task_id": "s-3", "task_type": "tumor_screening", "x": 1.0, "label": "malignant",
         "labelled_at": now},
    ]  # fmt: skip
    await publish_events(
        kafka_settings,
        [Outgoing(topics.scored, e) for e in traffic]
        + [Outgoing(topics.feedback, feedback(r)) for r in people],
    )
    code, out = await run("model", "compare", "--model", "tumor_screening", "--json")
    assert code == 0, out
    found = json.loads(out)
    assert (found["tasks"], found["agreement"], found["labelled"]) == (4, 0.5, 2)
    assert found["confidence_shift"] == pytest.approx(-0.025)
    # s-1: both say benign, right; s-3: live benign (wrong), shadow malignant (right)
    assert (found["live_accuracy"], found["shadow_accuracy"]) == (0.5, 1.0)
    code, out = await run("model", "compare", "--model", "tumor_screening")
    assert "live 1 against shadow 2 on 4 tasks" in out
