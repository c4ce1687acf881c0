"""The improvement loop on real data with a known weakness: in the population the tasks now come
from, what the data set calls benign is malignant from a mean radius of 13 mm (a slice
relabelled on purpose). People's labels
teach a retrained candidate; validation on later labels shows it better on that slice and not
worse overall, and the gate refuses a deliberately worse candidate unless overridden."""

from __future__ import annotations

import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tandem_cli import improvement
from tandem_cli.dataset import sample_tasks
from tandem_policy.loader import load_policy
from tandem_scoring.manifest import Segment
from tandem_scoring.registry import read_manifest
from tandem_shared.fairness import wilson
from tandem_shared.promotion import Evidence, GateRefused, Scores, SegmentResult, gate, refusals

pytest.importorskip("skl2onnx", reason="the models dependency group is not installed")

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "deploy" / "local" / "policy.yaml")
T0 = datetime(2026, 11, 1, tzinfo=UTC)
SLICE = "12 ≤ mean_radius < 15"


def shifted(body: dict[str, Any], label: str) -> str:
    """The truth where the tasks now come from: benign with a mean radius of 13 mm or more is
    malignant there."""
    radius = body["features"]["mean_radius"]
    return "malignant" if label == "benign" and radius >= 13.0 else label


def labelled(count: int, seed: int, truth: Any = shifted) -> list[improvement.Row]:
    """What people labelled, one task a minute, as `tandem feedback export` writes it."""
    return [
        {
            "task_id": body["task_id"],
            "task_type": body["task_type"],
            **body["features"],
            "label": truth(body, label),
            "labelled_at": T0 + timedelta(minutes=n),
        }
        for n, (body, label) in enumerate(sample_tasks(count, seed))
    ]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models)
    return models


def test_a_retrained_candidate_learns_the_slice_and_the_gate_lets_it_through(
    registry: Path,
) -> None:
    rows = labelled(1200, seed=11)
    cut = rows[719]["labelled_at"]  # the first 720 labels teach, the later 480 judge
    manifest = improvement.retrain(registry, "tumor_screening", rows, "tests", 3.0, until=cut)

    assert manifest.version == "2"
    assert manifest.feedback is not None
    assert (manifest.feedback.rows, manifest.feedback.labelled_until) == (720, cut)
    assert (
        manifest.metrics.train_rows
        == len(improvement.load_recipe(registry, "tumor_screening").original_train()) + 720
    )
    assert (
        manifest.dataset.fingerprint
        != read_manifest(registry / "tumor_screening" / "1").dataset.fingerprint
    )
    assert improvement.versions(registry, "tumor_screening") == ["1", "2"]

    evidence = improvement.validate(registry, "tumor_screening", "2", "1", rows, POLICY, 0.05)
    assert evidence.rows == 480  # only labels given after the candidate's window
    assert evidence.candidate_scores.accuracy > evidence.live_scores.accuracy
    band = next(s for s in evidence.segments if s.name == SLICE)
    assert band.candidate_error < band.live_error - 0.1
    assert refusals(evidence, "2") == []
    promotion = gate("2", evidence, None)
    assert (promotion.refused_for, promotion.override_reason) == ([], None)
    report = improvement.markdown(evidence, [])
    assert "Version 2 may be promoted." in report
    assert SLICE in report


def test_the_gate_refuses_a_deliberately_worse_candidate(registry: Path) -> None:
    chance = random.Random(5)
    wrong = labelled(1000, seed=12, truth=lambda _b, _l: chance.choice(["benign", "malignant"]))
    cut = wrong[599]["labelled_at"]
    improvement.retrain(registry, "tumor_screening", wrong, "tests", 10.0, until=cut)
    honest = labelled(1000, seed=12)
    evidence = improvement.validate(registry, "tumor_screening", "2", "1", honest, POLICY, 0.05)

    found = refusals(evidence, "2")
    assert any(reason.startswith("less accurate overall") for reason in found), found
    with pytest.raises(GateRefused, match="less accurate overall"):
        gate("2", evidence, None)
    with pytest.raises(GateRefused, match="less accurate overall"):
        gate("2", evidence, "   ")  # a reason must say something
    overridden = gate("2", evidence, "urgent fix for the north clinic, reviewed by the board")
    assert overridden.refused_for == found
    assert overridden.override_reason == "urgent fix for the north clinic, reviewed by the board"
    assert "The gate refuses version 2" in improvement.markdown(evidence, found)


def test_validation_needs_labels_the_candidate_never_saw(registry: Path) -> None:
    rows = labelled(300, seed=13)
    improvement.retrain(registry, "tumor_screening", rows, "tests", 3.0)
    with pytest.raises(improvement.ImprovementError, match="no labels given after"):
        improvement.validate(registry, "tumor_screening", "2", "1", rows, POLICY, 0.05)
    (registry / "train_wine_cultivar.py").unlink()
    with pytest.raises(improvement.ImprovementError, match="no recipe for wine_cultivar"):
        improvement.retrain(registry, "wine_cultivar", rows, "tests", 3.0)


def test_the_other_recipe_retrains_too(registry: Path) -> None:
    """The wine model's recipe (a random forest, three labels) takes people's labels as well."""
    recipe = improvement.load_recipe(registry, "wine_cultivar")
    holdout = recipe.splits()[1]
    names = recipe.feature_names()
    rows = [
        {
            "task_id": f"w-{i}",
            "task_type": "wine_cultivar",
            **dict(zip(names, map(float, features), strict=True)),
            "label": str(label),
            "labelled_at": T0 + timedelta(minutes=i),
        }
        for i, (features, label) in enumerate(zip(holdout.features, holdout.labels, strict=True))
    ]
    manifest = improvement.retrain(registry, "wine_cultivar", rows, "tests", 2.0)
    assert manifest.version == "2"
    assert manifest.metrics.train_rows == len(recipe.original_train()) + len(rows)
    assert [s.feature for s in manifest.segments] == ["alcohol"]


def scores(accuracy: float) -> Scores:
    return Scores(accuracy=accuracy, brier=0.1, ece=0.05, automation_rate=0.7)


def test_the_gate_reads_segments_with_the_margin() -> None:
    def evidence(candidate_error: float) -> Evidence:
        segment = SegmentResult(
            name="a", rows=40, live_error=0.10, candidate_error=candidate_error, weak=False
        )
        return Evidence(
            model="m",
            live="1",
            candidate="2",
            rows=100,
            margin=0.05,
            live_scores=scores(0.9),
            candidate_scores=scores(0.92),
            segments=[segment],
        )

    assert refusals(evidence(0.14), "2") == []  # worse, but within the margin
    [reason] = refusals(evidence(0.16), "2")
    assert reason.startswith("worse on segment a: error 0.160 against 0.100 live")
    assert refusals(evidence(0.0), "3") == ["the evidence is about version 2, not 3"]
    with pytest.raises(GateRefused, match="no validation evidence"):
        gate("2", None, None)
    assert gate("2", None, "first version, trained offline").refused_for == [
        "no validation evidence was given"
    ]


def test_calibration_error_and_bands_by_hand() -> None:
    # bin 0.6-0.7: confidences 0.6, 0.6, one right: |0.5 - 0.6| = 0.1, weight 2/4
    # bin 0.9-1.0: confidences 0.9, 0.9, both right: |1.0 - 0.9| = 0.1, weight 2/4
    assert improvement.calibration_error([0.6, 0.6, 0.9, 0.9], [True, False, True, True]) == (
        pytest.approx(0.1)
    )
    bands = improvement.segment_bands(Segment(feature="r", edges=[12.0, 15.0]))
    assert [b.name for b in bands] == ["r < 12", "12 ≤ r < 15", "r ≥ 15"]
    assert [{"r": 12.0} in b for b in bands] == [False, True, False]


def test_validation_reports_each_value_of_a_context_segment_beside_the_whole(
    registry: Path,
) -> None:
    """The labels carry the clinic (the policy names it among its segments); the candidate's
    manifest names it as a segment: each clinic gets its errors, the candidate's automation
    and its automatic decisions' accuracy with an interval, and the gaps to all tasks."""
    rows = labelled(1200, seed=11)
    for n, row in enumerate(rows):
        row["segment.clinic"] = "north" if row["mean_radius"] >= 13.0 else "south"
        # As the export writes them: whether people agreed with the live model, and whether
        # the task was a QA sample (every fourth here).
        row["agreed"] = n % 5 != 0
        row["qa_sample"] = n % 4 == 0
    cut = rows[719]["labelled_at"]
    improvement.retrain(registry, "tumor_screening", rows, "tests", 3.0, until=cut)
    path = registry / "tumor_screening" / "2" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["segments"].append({"context": "clinic"})
    path.write_text(json.dumps(manifest))

    evidence = improvement.validate(registry, "tumor_screening", "2", "1", rows, POLICY, 0.05)
    by_name = {s.name: s for s in evidence.segments}
    north, south = by_name["clinic=north"], by_name["clinic=south"]
    assert north.rows + south.rows == evidence.rows == 480
    # The slice the live version gets wrong is the north clinic's: the candidate learnt it.
    assert north.candidate_error < north.live_error
    for clinic in (north, south):
        assert set(clinic.disparity) == {
            "automation_rate",
            "automated_accuracy",
            "error",
            "override_rate",
            "qa_accuracy",
        }
        error_gap = clinic.disparity["error"].difference
        assert error_gap == pytest.approx(
            clinic.candidate_error - (1 - evidence.candidate_scores.accuracy), abs=1e-6
        )
        if clinic.automated_accuracy is not None:
            low, high = clinic.automated_accuracy_interval or (1.0, 0.0)
            assert low <= clinic.automated_accuracy <= high
    assert "clinic=north" in improvement.markdown(evidence, [])
    # Live on these tasks, counted here from the rows: overrides, and QA accuracy.
    test = [r for r in rows if r["labelled_at"] > cut]
    for clinic in (north, south):
        mine = [r for r in test if f"clinic={r['segment.clinic']}" == clinic.name]
        checked = [r for r in mine if r["qa_sample"]]
        assert clinic.override_rate == pytest.approx(sum(not r["agreed"] for r in mine) / len(mine))
        assert clinic.qa_samples == len(checked)
        assert clinic.qa_accuracy == pytest.approx(sum(r["agreed"] for r in checked) / len(checked))
        assert clinic.qa_accuracy_interval == wilson(
            sum(r["agreed"] for r in checked), len(checked)
        )
        whole_overrides = sum(not r["agreed"] for r in test) / len(test)
        assert clinic.disparity["override_rate"].difference == pytest.approx(
            clinic.override_rate - whole_overrides, abs=1e-6
        )

    for row in rows:
        del row["segment.clinic"]
    with pytest.raises(improvement.ImprovementError, match="no label carries context 'clinic'"):
        improvement.validate(registry, "tumor_screening", "2", "1", rows, POLICY, 0.05)
