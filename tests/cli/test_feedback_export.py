"""`tandem feedback export`: people's labels from the real broker into Parquet and CSV."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tandem_cli.feedback import read_rows
from tandem_cli.main import app
from tandem_shared.envelope import Event
from tandem_shared.events import FeedbackRecorded, ModelRef, PolicyRef
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics
from typer.testing import CliRunner

from tests.review_api.test_api import NOW
from tests.service_utils import publish_events

pytestmark = pytest.mark.kafka
runner = CliRunner()


def verdict(
    task_id: str, label: str, reviewer: str, minutes: int, **changes: object
) -> FeedbackRecorded:
    return FeedbackRecorded(
        task_id=task_id,
        task_type=str(changes.get("task_type", "tumor_screening")),
        features={"mean_radius": 14.2 + minutes, "mean_texture": 20.0},
        model=ModelRef(name="tumor_screening", version="1"),
        prediction="benign",
        probabilities={"benign": 0.8, "malignant": 0.2},
        confidence=0.8,
        label=label,
        reviewer=reviewer,
        qa_sample=bool(changes.get("qa_sample", False)),
        agreed=label == "benign",
        policy=PolicyRef(name="default", version=2),
        labelled_at=NOW + timedelta(minutes=minutes),
        segment=changes.get("segment", {}),
    )


async def publish(kafka: KafkaSettings, topics: Topics, verdicts: list[FeedbackRecorded]) -> None:
    await publish_events(
        kafka,
        [
            Outgoing(
                topics.feedback,
                Event.derived(
                    v, source="tandem/review-api", subject=v.task_id, stage=f"feedback/{v.reviewer}"
                ),
            )
            for v in verdicts
        ],
    )


async def test_export_writes_one_row_per_task_with_its_last_label(
    kafka_settings: KafkaSettings, topics: Topics, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("TANDEM_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    await publish(
        kafka_settings,
        topics,
        [
            verdict("a", "benign", "ana", 1, qa_sample=True),
            verdict("b", "benign", "ana", 2),
            verdict("b", "malignant", "ben", 3),  # approvers disagreed...
            verdict("b", "malignant", "sam", 4, segment={"clinic": "007"}),  # ...a senior decided
            verdict("w", "class_1", "ana", 5, task_type="wine_cultivar"),
        ],
    )

    async def export(*args: str) -> tuple[int, str]:
        result = await asyncio.to_thread(runner.invoke, app, ["feedback", "export", *args])
        return result.exit_code, result.output

    code, output = await export(str(tmp_path / "all.csv"))
    assert code == 1 and "--task-type" in output  # two task types: features differ

    parquet, table = tmp_path / "tumor.parquet", tmp_path / "tumor.csv"
    code, output = await export(str(parquet), "--task-type", "tumor_screening")
    assert code == 0 and "wrote 2 labelled tasks (4 verdicts)" in output, output
    rows = pq.read_table(parquet).to_pylist()
    assert [(r["task_id"], r["label"], r["reviewer"]) for r in rows] == [
        ("a", "benign", "ana"),
        ("b", "malignant", "sam"),
    ]
    assert rows[1]["mean_radius"] == pytest.approx(18.2) and rows[1]["mean_texture"] == 20.0
    assert rows[0]["qa_sample"] is True and rows[1]["agreed"] is False
    assert (rows[1]["model_version"], rows[1]["policy_version"]) == ("1", 2)
    # Beside the set: agreement on task b, the one three people judged (2 of 3 pairs differ).
    agreed = json.loads((tmp_path / "tumor.agreement.json").read_text())
    [tumor] = [a for a in agreed if a["scope"] == "task_type"]
    assert (tumor["tasks"], tumor["pairs"], tumor["observed"]) == (
        1,
        3,
        pytest.approx(1 / 3, abs=1e-4),
    )
    assert tumor["cohen_kappa"] is None and tumor["fleiss_kappa"] is not None
    assert {a["key"] for a in agreed if a["scope"] == "reviewer"} == {"ana", "ben", "sam"}
    assert "agreement on tumor_screening: 1 tasks" in output

    code, _ = await export(str(table), "--task-type", "tumor_screening")
    with table.open(newline="") as f:
        written = list(csv.DictReader(f))
    assert [(r["task_id"], r["label"], r["mean_radius"]) for r in written] == [
        ("a", "benign", "15.2"),
        ("b", "malignant", "18.2"),
    ]
    assert (await export(str(tmp_path / "x.json")))[0] == 2
    # The task's segment is a text column of its own, read back as text ("007", not 7.0).
    assert [r["segment.clinic"] for r in rows] == [None, "007"]
    assert [r["segment.clinic"] for r in read_rows(table)] == [None, "007"]
