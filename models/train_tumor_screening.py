"""Train the reference ``tumor_screening`` model and export it with its manifest.

    uv run --group models python models/train_tumor_screening.py [--out models]

Fits StandardScaler + LogisticRegression on the fixed train split of the bundled breast cancer
data, exports it to ONNX (float32 input ``[None, 30]``; a label tensor and a probability tensor,
no ZipMap) and writes ``<out>/tumor_screening/1/{model.onnx,manifest.json}``. Deterministic: a
rerun on the same library versions rewrites the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from datetime import UTC, datetime
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from tandem_cli import dataset
from tandem_scoring.manifest import (
    DatasetInfo,
    FeatureSpec,
    ModelManifest,
    ReferenceDistribution,
    Tensors,
    Training,
    TrainingMetrics,
)

NAME = "tumor_screening"
VERSION = "1"
INPUT = "features"
OPSET = {"": 15, "ai.onnx.ml": 3}
DEFAULT_OUT = Path(__file__).resolve().parent


def train_pipeline(train: dataset.Split) -> Pipeline:
    """The reference model; the tests refit it with this function to check the exported one."""
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("classify", LogisticRegression(C=1.0, max_iter=5000))]
    )
    pipeline.fit(train.features, train.labels)
    return pipeline


def evaluate(pipeline: Pipeline, holdout: dataset.Split) -> tuple[float, float]:
    """Holdout accuracy and ROC AUC (malignant as the positive class)."""
    classes = [str(c) for c in pipeline.classes_]
    probabilities = pipeline.predict_proba(holdout.features)[:, classes.index("malignant")]
    accuracy = accuracy_score(holdout.labels, pipeline.predict(holdout.features))
    auc = roc_auc_score(holdout.labels == "malignant", probabilities)
    return float(accuracy), float(auc)


def export_onnx(pipeline: Pipeline, features: list[str]) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model = to_onnx(
        pipeline,
        initial_types=[(INPUT, FloatTensorType([None, len(features)]))],
        target_opset=OPSET,
        options={id(pipeline.named_steps["classify"]): {"zipmap": False}},
    )
    # The registry compares these with the manifest, so a model never pairs with a wrong one.
    for key, value in (
        ("tandem.features", json.dumps(features)),
        ("tandem.labels", json.dumps([str(c) for c in pipeline.classes_])),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    data: bytes = model.SerializeToString()
    return data


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def reference(column: NDArray[np.float64]) -> ReferenceDistribution:
    """Decile bins of the training values (ties merged), the baseline for drift."""
    edges = np.unique([_round(q) for q in np.quantile(column, np.linspace(0.1, 0.9, 9))])
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
    return ReferenceDistribution(
        mean=_round(float(column.mean())),
        std=_round(float(column.std())),
        bin_edges=[float(e) for e in edges],
        bin_fractions=[float(c) / len(column) for c in counts],
    )


def _created_at(out: Path, model_sha256: str, fingerprint: str) -> datetime:
    """SOURCE_DATE_EPOCH if set; else keep the old time when nothing changed, so reruns match."""
    if epoch := os.environ.get("SOURCE_DATE_EPOCH"):
        return datetime.fromtimestamp(int(epoch), UTC)
    path = out / "manifest.json"
    if path.exists():
        old: dict[str, Any] = json.loads(path.read_text())
        if old.get("model_sha256") == model_sha256 and (
            old.get("dataset", {}).get("fingerprint") == fingerprint
        ):
            return datetime.fromisoformat(old["created_at"])
    return datetime.now(UTC).replace(microsecond=0)


def build_manifest(
    pipeline: Pipeline, model_bytes: bytes, out: Path, train: dataset.Split
) -> ModelManifest:
    holdout = dataset.holdout_split()
    names = dataset.feature_names()
    ranges = dataset.feature_ranges()
    accuracy, auc = evaluate(pipeline, holdout)
    model_sha256 = hashlib.sha256(model_bytes).hexdigest()
    fingerprint = dataset.fingerprint(train)
    features = []
    for order, name in enumerate(names):
        column = train.features[:, order]
        low, high = ranges[name]
        features.append(
            FeatureSpec(
                name=name,
                order=order,
                type="numeric",
                min=low,
                max=high,
                impute=_round(float(column.mean())),
                reference=reference(column),
            )
        )
    return ModelManifest(
        name=NAME,
        version=VERSION,
        task_types=[dataset.TASK_TYPE],
        features=features,
        labels=[str(c) for c in pipeline.classes_],
        tensors=Tensors(input=INPUT, label="label", probabilities="probabilities"),
        metrics=TrainingMetrics(
            holdout_accuracy=round(accuracy, 6),
            roc_auc=round(auc, 6),
            train_rows=len(train),
            holdout_rows=len(holdout),
        ),
        dataset=DatasetInfo(
            source="sklearn.datasets.load_breast_cancer",
            split=(
                f"stratified train/holdout {1 - dataset.HOLDOUT_FRACTION:.0%}/"
                f"{dataset.HOLDOUT_FRACTION:.0%}, random_state={dataset.SPLIT_SEED}; "
                "fingerprint of the train split"
            ),
            fingerprint=fingerprint,
        ),
        training=Training(
            algorithm="StandardScaler + LogisticRegression(C=1.0)",
            libraries={lib: installed(lib) for lib in ("scikit-learn", "skl2onnx", "numpy")},
            opset=OPSET,
        ),
        model_sha256=model_sha256,
        created_at=_created_at(out, model_sha256, fingerprint),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the models folder")
    args = parser.parse_args(argv)
    out: Path = args.out / NAME / VERSION
    train = dataset.train_split()
    pipeline = train_pipeline(train)
    model_bytes = export_onnx(pipeline, dataset.feature_names())
    manifest = build_manifest(pipeline, model_bytes, out, train)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(model_bytes)
    (out / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    print(
        f"wrote {out}: holdout accuracy {manifest.metrics.holdout_accuracy:.4f}, "
        f"ROC AUC {manifest.metrics.roc_auc:.4f}, {len(model_bytes)} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
