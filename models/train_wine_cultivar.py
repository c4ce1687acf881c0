"""Train the ``wine_cultivar`` model and export it with its manifest.

    uv run --group models python models/train_wine_cultivar.py [--out models]

Fits a small random forest on a fixed stratified train split of scikit-learn's bundled wine
data (178 wines, 13 chemical measurements, three cultivars), exports it to ONNX (float32 input
``[None, 13]``; a label tensor and a probability tensor, no ZipMap) and writes
``<out>/wine_cultivar/1/{model.onnx,manifest.json}``. Deterministic: a rerun on the same
library versions rewrites the same bytes.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from tandem_cli.dataset import Split, fingerprint
from tandem_scoring.manifest import (
    DatasetInfo,
    FeedbackWindow,
    ModelManifest,
    OcclusionExplanation,
    Segment,
    Tensors,
    Training,
    TrainingMetrics,
)

# The shared training module sits beside this script (also when a test loads it from its file).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import modelkit

NAME = "wine_cultivar"
VERSION = "1"
TASK_TYPE = "wine_cultivar"
# scikit-learn's target: 0, 1, 2 (class_0 ...).
LABELS = ("cultivar_a", "cultivar_b", "cultivar_c")
# Validation reports on light, medium and strong wines apart (alcohol, % by volume).
SEGMENTS = [Segment(feature="alcohol", edges=[12.5, 13.5])]
HOLDOUT_FRACTION = 0.3
SPLIT_SEED = 7
TREES, DEPTH, FOREST_SEED = 40, 4, 7
DEFAULT_OUT = Path(__file__).resolve().parent


def feature_names() -> list[str]:
    from sklearn.datasets import load_wine

    return ["_".join(str(n).replace("/", "_").split()) for n in load_wine().feature_names]


@cache
def splits() -> tuple[Split, Split]:
    """The fixed train and holdout splits, labels renamed to ``LABELS``."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    data = load_wine()
    labels = np.asarray(LABELS)[data.target]
    x_train, x_hold, y_train, y_hold = train_test_split(
        np.ascontiguousarray(data.data, dtype=np.float64),
        labels,
        test_size=HOLDOUT_FRACTION,
        stratify=labels,
        random_state=SPLIT_SEED,
    )
    return Split(np.ascontiguousarray(x_train), y_train), Split(
        np.ascontiguousarray(x_hold), y_hold
    )


def train_forest(train: Split, sample_weight: np.ndarray | None = None) -> RandomForestClassifier:
    """The model; the tests refit it with this function to check the exported one.
    ``sample_weight`` lets a retraining count people's corrections for more than one row."""
    forest = RandomForestClassifier(
        n_estimators=TREES, max_depth=DEPTH, random_state=FOREST_SEED, n_jobs=1
    )
    forest.fit(train.features, train.labels, sample_weight=sample_weight)
    return forest


def build_manifest(
    forest: RandomForestClassifier,
    model_bytes: bytes,
    out: Path,
    train: Split,
    holdout: Split,
    version: str = VERSION,
    feedback: FeedbackWindow | None = None,
) -> ModelManifest:
    probabilities = forest.predict_proba(holdout.features)
    accuracy = accuracy_score(holdout.labels, forest.predict(holdout.features))
    auc = roc_auc_score(holdout.labels, probabilities, multi_class="ovr", labels=forest.classes_)
    model_sha256 = modelkit.sha256(model_bytes)
    train_fingerprint = fingerprint(train)
    split = (
        f"stratified train/holdout {1 - HOLDOUT_FRACTION:.0%}/{HOLDOUT_FRACTION:.0%}, "
        f"random_state={SPLIT_SEED}; fingerprint of the train split"
    )
    if feedback is not None:
        split += f" and {feedback.rows} rows labelled by people (see feedback)"
    return ModelManifest(
        name=NAME,
        version=version,
        task_types=[TASK_TYPE],
        features=modelkit.numeric_features(feature_names(), train.features),
        labels=[str(c) for c in forest.classes_],
        tensors=Tensors(input=modelkit.INPUT, label="label", probabilities="probabilities"),
        confidence_reference=modelkit.confidence_reference(forest.predict_proba(train.features)),
        explanation=OcclusionExplanation(method="occlusion"),
        metrics=TrainingMetrics(
            holdout_accuracy=round(float(accuracy), 6),
            roc_auc=round(float(auc), 6),
            train_rows=len(train),
            holdout_rows=len(holdout),
        ),
        dataset=DatasetInfo(
            source="sklearn.datasets.load_wine",
            split=split,
            fingerprint=train_fingerprint,
        ),
        training=Training(
            algorithm=(
                f"RandomForestClassifier(n_estimators={TREES}, max_depth={DEPTH}, "
                f"random_state={FOREST_SEED})"
            ),
            libraries=modelkit.libraries(),
            opset=modelkit.OPSET,
        ),
        model_sha256=model_sha256,
        created_at=modelkit.created_at(out, model_sha256, train_fingerprint),
        segments=SEGMENTS,
        feedback=feedback,
    )


def original_train() -> Split:
    """The rows every version of this model learns from, before any of people's labels."""
    return splits()[0]


def holdout() -> Split:
    """Rows no version trains on: what error budgets are calibrated on (tandem policy calibrate)."""
    return splits()[1]


def candidate(
    train: Split,
    out: Path,
    version: str,
    feedback: FeedbackWindow | None = None,
    sample_weight: np.ndarray | None = None,
) -> ModelManifest:
    """Fit the recipe on ``train``, export it, and write ``out`` (model.onnx, manifest.json)."""
    forest = train_forest(train, sample_weight)
    labels = [str(c) for c in forest.classes_]
    model_bytes = modelkit.export_onnx(forest, forest, feature_names(), labels)
    manifest = build_manifest(forest, model_bytes, out, train, splits()[1], version, feedback)
    modelkit.write(out, model_bytes, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    return modelkit.main(argv, __doc__, DEFAULT_OUT, NAME, VERSION, candidate, original_train)


if __name__ == "__main__":
    sys.exit(main())
