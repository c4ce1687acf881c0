"""The committed reference model is exactly what the training script produces."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from tandem_cli import dataset
from tandem_scoring.manifest import ModelManifest

from tests.scoring.conftest import REFERENCE


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
