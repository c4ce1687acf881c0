"""Why a model answered what it did: per-feature contributions, pure numpy, no Kafka, no HTTP.

Both methods measure a feature against its ``impute`` value, the manifest's reference point:

- ``linear`` (a model linear in its raw inputs): the exact contribution of feature i to the
  log-odds of the positive label, ``coef_i * (x_i - impute_i)``. No model call.
- ``occlusion`` (any model): the predicted label's probability minus its probability with the
  feature set to its reference. Every (row, feature) pair of a batch goes into one matrix, so a
  batch costs exactly one extra model call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from pydantic import TypeAdapter
from tandem_shared.events import Contribution

from tandem_scoring.manifest import LinearExplanation, ModelManifest, OcclusionExplanation
from tandem_scoring.registry import edge_rows

TOP_K = 5
_CONTRIBUTIONS = TypeAdapter(list[list[Contribution]])

# Input matrix in, probabilities (rows x labels) out.
Predict = Callable[[NDArray[np.float32]], NDArray[np.float64]]


def reference_row(manifest: ModelManifest) -> NDArray[np.float32]:
    """Every feature at its ``impute`` value, encoded as the model reads it."""
    row: NDArray[np.float32] = edge_rows(manifest)[0]
    return row


def feature_names(manifest: ModelManifest) -> list[str]:
    return [f.name for f in manifest.ordered_features]


def linear(manifest: ModelManifest, matrix: NDArray[np.float32]) -> NDArray[np.float64]:
    """Contributions (rows x features) to the log-odds of the manifest's positive label."""
    explanation = manifest.explanation
    if not isinstance(explanation, LinearExplanation):
        raise ValueError(f"model {manifest.name}/{manifest.version} has no linear explanation")
    # A linear explanation only admits one-column features, so columns are features.
    coefficients = np.array(
        [explanation.coefficients[name] for name in feature_names(manifest)], dtype=np.float64
    )
    reference = reference_row(manifest).astype(np.float64)
    contributions: NDArray[np.float64] = (matrix.astype(np.float64) - reference) * coefficients
    return contributions


def occluded(manifest: ModelManifest, matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    """The N*F rows where row ``n * F + f`` is row n with feature f's columns at reference."""
    reference = reference_row(manifest)
    rows, width = matrix.shape
    count = len(manifest.ordered_features)
    stacked = np.repeat(matrix[:, np.newaxis, :], count, axis=1)
    start = 0
    for f, spec in enumerate(manifest.ordered_features):
        # A one-hot feature is occluded as a whole: all its columns take the reference encoding.
        columns = slice(start, start + spec.width)
        stacked[:, f, columns] = reference[columns]
        start += spec.width
    out: NDArray[np.float32] = stacked.reshape(rows * count, width)
    return out


def occlusion(
    predict: Predict,
    manifest: ModelManifest,
    matrix: NDArray[np.float32],
    probabilities: NDArray[np.float64],
    predicted: NDArray[np.intp],
) -> NDArray[np.float64]:
    """Contributions (rows x features) to the predicted label's probability, one model call."""
    rows = len(matrix)
    count = len(manifest.ordered_features)
    if rows == 0:
        return np.zeros((0, count), dtype=np.float64)
    answered = np.asarray(predict(occluded(manifest, matrix)), dtype=np.float64)
    without = answered.reshape(rows, count, -1)[np.arange(rows), :, predicted]
    contributions: NDArray[np.float64] = (
        probabilities[np.arange(rows), predicted][:, np.newaxis] - without
    )
    return contributions


def top(
    names: list[str], contributions: NDArray[np.float64], k: int = TOP_K
) -> list[list[Contribution]]:
    """Per row, the ``k`` largest contributions by absolute value, largest first (ties keep
    the features' order)."""
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(contributions, order, axis=1).tolist()
    # Validated as one list: pydantic makes the models in Rust, faster than one call each.
    return _CONTRIBUTIONS.validate_python(
        [
            [{"feature": names[i], "contribution": v} for i, v in zip(row, row_values, strict=True)]
            for row, row_values in zip(order.tolist(), values, strict=True)
        ]
    )


def explain(
    predict: Predict,
    manifest: ModelManifest,
    matrix: NDArray[np.float32],
    probabilities: NDArray[np.float64],
    predicted: NDArray[np.intp],
    k: int = TOP_K,
) -> list[list[Contribution]]:
    """The top ``k`` contributions of every row by the manifest's method (none: empty lists)."""
    method = manifest.explanation
    if k == 0:
        return [[] for _ in range(len(matrix))]
    if isinstance(method, LinearExplanation):
        contributions = linear(manifest, matrix)
    elif isinstance(method, OcclusionExplanation):
        contributions = occlusion(predict, manifest, matrix, probabilities, predicted)
    else:
        return [[] for _ in range(len(matrix))]
    return top(feature_names(manifest), contributions, k)
