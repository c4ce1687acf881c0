"""The committed models are exactly what their training scripts produce, and score like them."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from tandem_cli import dataset
from tandem_scoring.manifest import ModelManifest
from tandem_scoring.registry import LoadedModel, ModelRegistry, load_model
from tandem_scoring.scorer import Scorer, ScoreResult
from tandem_shared.events import TaskSubmitted

from tests.scoring.conftest import MODELS, REFERENCE
from tests.scoring.test_scorer import CountingSession


def test_committed_manifest_describes_the_reference_data() -> None:
    manifest = ModelManifest.model_validate_json((REFERENCE / "manifest.json").read_bytes())
    assert manifest.task_types == ["tumor_screening"]
    assert [f.name for f in manifest.ordered_features] == dataset.feature_names()
    assert sorted(manifest.labels) == sorted(dataset.LABELS)
    assert manifest.dataset.fingerprint == dataset.fingerprint(dataset.train_split())
    assert manifest.metrics.holdout_accuracy > 0.95 and manifest.metrics.roc_auc > 0.98
    ranges = dataset.feature_ranges()
    assert all((f.min, f.max) == ranges[f.name] for f in manifest.features)


def test_retraining_reproduces_the_committed_model(training: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx", reason="the models dependency group is not installed")
    assert training.main(["--out", str(tmp_path)]) == 0
    out = tmp_path / "tumor_screening" / "1"
    assert (out / "model.onnx").read_bytes() == (REFERENCE / "model.onnx").read_bytes()
    fresh = json.loads((out / "manifest.json").read_text())
    committed = json.loads((REFERENCE / "manifest.json").read_text())
    for manifest in (fresh, committed):
        manifest.pop("created_at")
    assert fresh == committed


WINE = MODELS / "wine_cultivar" / "1"


@pytest.fixture(scope="module")
def wine_training() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "train_wine_cultivar", MODELS / "train_wine_cultivar.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_retraining_reproduces_the_wine_model(wine_training: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx", reason="the models dependency group is not installed")
    # The committed folder's created_at is kept when the model is unchanged: start from a copy.
    shutil.copytree(WINE, tmp_path / "wine_cultivar" / "1")
    assert wine_training.main(["--out", str(tmp_path)]) == 0
    for name in ("model.onnx", "manifest.json"):
        assert (tmp_path / "wine_cultivar" / "1" / name).read_bytes() == (WINE / name).read_bytes()
    assert (WINE / "model.onnx").stat().st_size < 1_000_000


def test_wine_manifest_describes_its_data(wine_training: ModuleType) -> None:
    manifest = ModelManifest.model_validate_json((WINE / "manifest.json").read_bytes())
    train, _ = wine_training.splits()
    assert manifest.task_types == ["wine_cultivar"]
    assert manifest.labels == ["cultivar_a", "cultivar_b", "cultivar_c"]
    assert [f.name for f in manifest.ordered_features] == wine_training.feature_names()
    assert manifest.dataset.fingerprint == dataset.fingerprint(train)
    assert (manifest.metrics.train_rows, manifest.metrics.holdout_rows) == (124, 54)
    assert manifest.metrics.holdout_accuracy > 0.9
    assert manifest.explanation.method == "occlusion" and manifest.missing_references == []


def test_wine_scores_like_the_forest_then_explains_in_one_call(wine_training: ModuleType) -> None:
    train, holdout = wine_training.splits()
    forest = wine_training.train_forest(train)
    model = load_model(WINE)
    counting = CountingSession(model.session)
    scorer = Scorer(ModelRegistry({"wine_cultivar": LoadedModel(model.manifest, counting)}))
    names = wine_training.feature_names()
    tasks = [
        TaskSubmitted(
            task_id=f"w-{i}",
            task_type="wine_cultivar",
            features={n: float(v) for n, v in zip(names, row, strict=True)},
        )
        for i, row in enumerate(holdout.features)
    ]
    results = scorer.predict(tasks)
    # One call scores the batch, one more explains it (occlusion of each of the 13 features).
    assert [m.shape for m in counting.inputs] == [(len(tasks), 13), (len(tasks) * 13, 13)]
    expected = forest.predict_proba(holdout.features)
    for result, want, predicted in zip(
        results, expected, forest.predict(holdout.features), strict=True
    ):
        assert isinstance(result, ScoreResult) and result.quality_flags == []
        assert result.prediction == predicted
        for label, p in zip(forest.classes_, want, strict=True):
            assert result.probabilities[str(label)] == pytest.approx(p, abs=1e-5)


def test_linear_explanation_reproduces_the_log_odds(training: ModuleType) -> None:
    manifest = ModelManifest.model_validate_json((REFERENCE / "manifest.json").read_bytes())
    explanation = manifest.explanation
    assert explanation.method == "linear" and explanation.positive == "malignant"
    pipeline = training.train_pipeline(dataset.train_split())
    holdout = dataset.holdout_split().features
    coefficients = np.array([explanation.coefficients[n] for n in dataset.feature_names()])
    log_odds = explanation.intercept + holdout @ coefficients
    assert np.allclose(log_odds, pipeline.decision_function(holdout), atol=1e-3)
    # Contributions against the impute row add up to the log-odds difference.
    impute = np.array([f.impute for f in manifest.ordered_features])  # type: ignore[union-attr]
    contributions = (holdout - impute) * coefficients
    base = explanation.intercept + impute @ coefficients
    assert np.allclose(base + contributions.sum(axis=1), log_odds)
