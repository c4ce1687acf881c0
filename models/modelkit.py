"""What every training script shares: reference bins, feature specs, ONNX export, the manifest.

Deterministic throughout: numbers are rounded to 6 significant digits before they are written,
and ``created_at`` is kept while the model and its training data are unchanged, so a rerun on
the same library versions rewrites the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tandem_scoring.manifest import ModelManifest, NumericFeature, ReferenceDistribution

INPUT = "features"
OPSET = {"": 15, "ai.onnx.ml": 3}
LIBRARIES = ("scikit-learn", "skl2onnx", "numpy")
# Valid ranges are the training range widened by this share of its span on each side.
RANGE_MARGIN = 0.25


def rounded(value: float) -> float:
    return float(f"{value:.6g}")


def reference(column: NDArray[np.float64]) -> ReferenceDistribution:
    """Decile bins of the training values (ties merged), the baseline for drift."""
    edges = np.unique([rounded(q) for q in np.quantile(column, np.linspace(0.1, 0.9, 9))])
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
    return ReferenceDistribution(
        mean=rounded(float(column.mean())),
        std=rounded(float(column.std())),
        bin_edges=[float(e) for e in edges],
        bin_fractions=[float(c) / len(column) for c in counts],
    )


def valid_range(column: NDArray[np.float64]) -> tuple[float, float]:
    """The training range widened a bit, never below 0 for a measure that never is."""
    low, high = float(column.min()), float(column.max())
    span = high - low or abs(high) or 1.0
    lower = low - RANGE_MARGIN * span
    if low >= 0:
        lower = max(lower, 0.0)
    return rounded(lower), rounded(high + RANGE_MARGIN * span)


def numeric_features(names: Sequence[str], train: NDArray[np.float64]) -> list[NumericFeature]:
    """One numeric feature per column, imputed with its training mean."""
    features = []
    for order, name in enumerate(names):
        column = train[:, order]
        low, high = valid_range(column)
        features.append(
            NumericFeature(
                name=name,
                order=order,
                type="numeric",
                min=low,
                max=high,
                impute=rounded(float(column.mean())),
                reference=reference(column),
            )
        )
    return features


def confidence_reference(probabilities: NDArray[np.float64]) -> ReferenceDistribution:
    """The model's confidence (top probability) on the training rows."""
    return reference(np.max(probabilities, axis=1))


def export_onnx(
    model: Any, classifier: Any, features: Sequence[str], labels: Sequence[str]
) -> bytes:
    """Float32 input ``[None, n]``; a label and a probability tensor (no ZipMap)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        model,
        initial_types=[(INPUT, FloatTensorType([None, len(features)]))],
        target_opset=OPSET,
        options={id(classifier): {"zipmap": False}},
    )
    # The registry compares these with the manifest, so a model never pairs with a wrong one.
    for key, value in (
        ("tandem.features", json.dumps(list(features))),
        ("tandem.labels", json.dumps(list(labels))),
    ):
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    data: bytes = onnx_model.SerializeToString()
    return data


def libraries() -> dict[str, str]:
    return {lib: installed(lib) for lib in LIBRARIES}


def created_at(out: Path, model_sha256: str, fingerprint: str) -> datetime:
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(out: Path, model_bytes: bytes, manifest: ModelManifest) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(model_bytes)
    (out / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")


def main(
    argv: list[str] | None,
    doc: str | None,
    default_out: Path,
    name: str,
    version: str,
    candidate: Callable[..., ModelManifest],
    original_train: Callable[[], Any],
) -> int:
    """What every training script does when run: fit on the original rows, write, report."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out, help="the models folder")
    args = parser.parse_args(argv)
    out: Path = args.out / name / version
    manifest = candidate(original_train(), out, version)
    print(
        f"wrote {out}: holdout accuracy {manifest.metrics.holdout_accuracy:.4f}, "
        f"ROC AUC {manifest.metrics.roc_auc:.4f}"
    )
    return 0
