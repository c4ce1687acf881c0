"""Train the reference ``tumor_screening`` model and export it with its manifest.

    uv run --group models python models/train_tumor_screening.py [--out models]

Fits StandardScaler + LogisticRegression on the fixed train split of the bundled breast cancer
data, exports it to ONNX (float32 input ``[None, 30]``; a label tensor and a probability tensor,
no ZipMap) and writes ``<out>/tumor_screening/1/{model.onnx,manifest.json}``. Deterministic: a
rerun on the same library versions rewrites the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from tandem_cli import dataset
from tandem_scoring.manifest import (
    DatasetInfo,
    FeedbackWindow,
    LinearExplanation,
    ModelManifest,
    Segment,
    Tensors,
    Training,
    TrainingMetrics,
)

# The shared training module sits beside this script (also when a test loads it from its file).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import modelkit

NAME = "tumor_screening"
VERSION = "1"
DEFAULT_OUT = Path(__file__).resolve().parent
# Validation reports on small, medium and large tumours apart (mean radius in mm).
SEGMENTS = [Segment(feature="mean_radius", edges=[12.0, 15.0])]


def train_pipeline(train: dataset.Split, sample_weight: np.ndarray | None = None) -> Pipeline:
    """The reference model; the tests refit it with this function to check the exported one.
    ``sample_weight`` lets a retraining count people's corrections for more than one row."""
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("classify", LogisticRegression(C=1.0, max_iter=5000))]
    )
    pipeline.fit(train.features, train.labels, classify__sample_weight=sample_weight)
    return pipeline


def evaluate(pipeline: Pipeline, holdout: dataset.Split) -> tuple[float, float]:
    """Holdout accuracy and ROC AUC (malignant as the positive class)."""
    classes = [str(c) for c in pipeline.classes_]
    probabilities = pipeline.predict_proba(holdout.features)[:, classes.index("malignant")]
    accuracy = accuracy_score(holdout.labels, pipeline.predict(holdout.features))
    auc = roc_auc_score(holdout.labels == "malignant", probabilities)
    return float(accuracy), float(auc)


def explanation(pipeline: Pipeline, names: list[str]) -> LinearExplanation:
    """The logistic regression unscaled: log-odds of classes_[1] in raw feature units."""
    scale = pipeline.named_steps["scale"]
    classify = pipeline.named_steps["classify"]
    raw = classify.coef_[0] / scale.scale_
    intercept = float(classify.intercept_[0]) - float(np.dot(raw, scale.mean_))
    return LinearExplanation(
        method="linear",
        positive=str(classify.classes_[1]),
        coefficients={n: modelkit.rounded(float(c)) for n, c in zip(names, raw, strict=True)},
        intercept=modelkit.rounded(intercept),
    )


def build_manifest(
    pipeline: Pipeline,
    model_bytes: bytes,
    out: Path,
    train: dataset.Split,
    version: str = VERSION,
    feedback: FeedbackWindow | None = None,
) -> ModelManifest:
    holdout = dataset.holdout_split()
    names = dataset.feature_names()
    accuracy, auc = evaluate(pipeline, holdout)
    model_sha256 = modelkit.sha256(model_bytes)
    fingerprint = dataset.fingerprint(train)
    split = (
        f"stratified train/holdout {1 - dataset.HOLDOUT_FRACTION:.0%}/"
        f"{dataset.HOLDOUT_FRACTION:.0%}, random_state={dataset.SPLIT_SEED}; "
        "fingerprint of the train split"
    )
    if feedback is not None:
        split += f" and {feedback.rows} rows labelled by people (see feedback)"
    return ModelManifest(
        name=NAME,
        version=version,
        task_types=[dataset.TASK_TYPE],
        features=modelkit.numeric_features(names, train.features),
        labels=[str(c) for c in pipeline.classes_],
        tensors=Tensors(input=modelkit.INPUT, label="label", probabilities="probabilities"),
        confidence_reference=modelkit.confidence_reference(pipeline.predict_proba(train.features)),
        explanation=explanation(pipeline, names),
        metrics=TrainingMetrics(
            holdout_accuracy=round(accuracy, 6),
            roc_auc=round(auc, 6),
            train_rows=len(train),
            holdout_rows=len(holdout),
        ),
        dataset=DatasetInfo(
            source="sklearn.datasets.load_breast_cancer",
            split=split,
            fingerprint=fingerprint,
        ),
        training=Training(
            algorithm="StandardScaler + LogisticRegression(C=1.0)",
            libraries=modelkit.libraries(),
            opset=modelkit.OPSET,
        ),
        model_sha256=model_sha256,
        created_at=modelkit.created_at(out, model_sha256, fingerprint),
        segments=SEGMENTS,
        feedback=feedback,
    )


def original_train() -> dataset.Split:
    """The rows every version of this model learns from, before any of people's labels."""
    return dataset.train_split()


def holdout() -> dataset.Split:
    """Rows no version trains on: what error budgets are calibrated on (tandem policy calibrate)."""
    return dataset.holdout_split()


def candidate(
    train: dataset.Split,
    out: Path,
    version: str,
    feedback: FeedbackWindow | None = None,
    sample_weight: np.ndarray | None = None,
) -> ModelManifest:
    """Fit the recipe on ``train``, export it, and write ``out`` (model.onnx, manifest.json)."""
    pipeline = train_pipeline(train, sample_weight)
    labels = [str(c) for c in pipeline.classes_]
    model_bytes = modelkit.export_onnx(
        pipeline, pipeline.named_steps["classify"], dataset.feature_names(), labels
    )
    manifest = build_manifest(pipeline, model_bytes, out, train, version, feedback)
    modelkit.write(out, model_bytes, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    return modelkit.main(argv, __doc__, DEFAULT_OUT, NAME, VERSION, candidate, original_train)


if __name__ == "__main__":
    sys.exit(main())
