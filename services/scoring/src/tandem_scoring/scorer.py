"""The scoring core: tasks in, scores out. No Kafka, no HTTP.

A batch is grouped by task type; each model gets ONE float32 matrix and ONE onnxruntime call.
Bad feature values never stop a task: they are flagged, replaced by the manifest's reference
value (or clipped into range) and the task is scored; only a task no model serves is rejected.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from tandem_shared.events import (
    Contribution,
    FeatureValue,
    ModelRef,
    QualityFlag,
    Score,
    ShadowScore,
    TaskSubmitted,
)

from tandem_scoring.columns import PlainNumbers, plain_numbers
from tandem_scoring.explain import TOP_K, explain
from tandem_scoring.manifest import (
    BooleanFeature,
    CategoricalFeature,
    ModelManifest,
    NumericFeature,
)
from tandem_scoring.registry import LoadedModel, ModelRegistry

# A producer may send thousands of stray keys; a few flags say enough.
MAX_UNKNOWN_FLAGS = 5
_FLOAT32_MAX = float(np.finfo(np.float32).max)

InferenceObserver = Callable[[LoadedModel, int, float], None]


@dataclass(slots=True)  # made for every task: not frozen, like Event
class ScoreResult:
    task_id: str
    task_type: str
    model: ModelRef
    prediction: str
    probabilities: dict[str, float]
    confidence: float
    quality_flags: list[QualityFlag] = field(default_factory=list)
    # The top contributing features, largest first; empty when the model is not explained.
    explanation: list[Contribution] = field(default_factory=list)

    def to_score(self, shadow: ShadowScore | None = None) -> Score:
        return Score(
            model=self.model,
            prediction=self.prediction,
            probabilities=self.probabilities,
            confidence=self.confidence,
            quality_flags=self.quality_flags,
            explanation=self.explanation,
            shadow=shadow,
        )


@dataclass(frozen=True)
class Rejection:
    task_id: str
    reason: str


def _flag(code: str, feature: str, detail: str) -> QualityFlag:
    return QualityFlag.model_validate({"code": code, "feature": feature, "detail": detail})


def _short(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 24 else f"{text[:20]}..."


def _value(
    spec: NumericFeature, features: Mapping[str, FeatureValue]
) -> tuple[float, QualityFlag | None]:
    """The input value of one feature, or the value it is scored as and the flag saying why."""
    raw = features.get(spec.name)
    imputed = f"scored as {spec.impute:g}"
    if raw is None:
        what = "null" if spec.name in features else "absent"
        return spec.impute, _flag("missing", spec.name, f"{what}; {imputed}")
    if not isinstance(raw, int | float):  # booleans are ints: they count as 0 and 1
        detail = f"{type(raw).__name__} where a number is expected; {imputed}"
        return spec.impute, _flag("wrong_type", spec.name, detail)
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        beyond = " (beyond float32)" if not isinstance(raw, float) or math.isfinite(raw) else ""
        detail = f"{_short(raw)}{beyond}; {imputed}"
        return spec.impute, _flag("not_finite", spec.name, detail)
    if not spec.min <= value <= spec.max:
        bound = spec.min if value < spec.min else spec.max
        detail = f"{value:g} outside [{spec.min:g}, {spec.max:g}]; scored as {bound:g}"
        return bound, _flag("out_of_range", spec.name, detail)
    return value, None


def _choice(
    spec: BooleanFeature | CategoricalFeature, features: Mapping[str, FeatureValue]
) -> tuple[bool | str, QualityFlag | None]:
    """A boolean (also 0 or 1) or one of the categories; else the impute value and a flag."""
    raw = features.get(spec.name)
    imputed = f"scored as {spec.impute!r}"
    if raw is None:
        what = "null" if spec.name in features else "absent"
        return spec.impute, _flag("missing", spec.name, f"{what}; {imputed}")
    if isinstance(spec, BooleanFeature):
        if isinstance(raw, int | float) and raw in (0, 1):  # True and False included
            return bool(raw), None
        detail = f"{_short(raw)} where a boolean is expected; {imputed}"
        return spec.impute, _flag("wrong_type", spec.name, detail)
    if not isinstance(raw, str):
        detail = f"{type(raw).__name__} where a category is expected; {imputed}"
        return spec.impute, _flag("wrong_type", spec.name, detail)
    if raw not in spec.categories:
        return spec.impute, _flag("out_of_range", spec.name, f"unknown category; {imputed}")
    return raw, None


def prepare(
    manifest: ModelManifest, features: Mapping[str, FeatureValue]
) -> tuple[list[float], list[QualityFlag]]:
    """One input row in the manifest's column order, and the quality flags raised on the way."""
    row: list[float] = []
    flags: list[QualityFlag] = []
    for spec in manifest.ordered_features:
        flag: QualityFlag | None
        if isinstance(spec, NumericFeature):
            number, flag = _value(spec, features)
            row.append(number)
        elif isinstance(spec, BooleanFeature):
            truth, flag = _choice(spec, features)
            row.extend(spec.encode(bool(truth)))
        else:
            category, flag = _choice(spec, features)
            row.extend(spec.encode(str(category)))
        if flag is not None:
            flags.append(flag)
    unknown = sorted(k for k in features if k not in manifest.feature_names)
    for name in unknown[:MAX_UNKNOWN_FLAGS]:
        flags.append(_flag("unknown_feature", name, "not an input of the model; ignored"))
    if len(unknown) > MAX_UNKNOWN_FLAGS:
        more = len(unknown) - MAX_UNKNOWN_FLAGS
        flags.append(_flag("unknown_feature", "*", f"{more} more unknown features ignored"))
    return row, flags


def _inputs(
    manifest: ModelManifest, rows: Sequence[Mapping[str, FeatureValue]]
) -> tuple[NDArray[np.float32], list[list[QualityFlag]], PlainNumbers | None]:
    """The input matrix, each row's flags, and the plain numbers read on the way (if any).
    When every feature is numeric, the rows that are clean (all present, plain, finite, in
    range, nothing unknown) fill the matrix in one numpy pass; the others, and every row of
    other models, go through ``prepare`` value by value."""
    matrix = np.empty((len(rows), manifest.width), dtype=np.float32)
    flags: list[list[QualityFlag]] = [[] for _ in rows]
    specs = manifest.ordered_features
    clean = np.zeros(len(rows), dtype=np.bool_)
    plain: PlainNumbers | None = None
    if all(isinstance(spec, NumericFeature) for spec in specs):
        numeric = [spec for spec in specs if isinstance(spec, NumericFeature)]
        low = np.array([spec.min for spec in numeric])
        high = np.array([spec.max for spec in numeric])
        plain = plain_numbers([spec.name for spec in numeric], rows)
        block = plain.matrix
        in_range = ((block >= low) & (block <= high) & (np.abs(block) <= _FLOAT32_MAX)).all(axis=1)
        known = np.fromiter((len(row) == len(specs) for row in rows), np.bool_, len(rows))
        clean = plain.clean & in_range & known
        matrix[clean] = block[clean]
    for i in np.flatnonzero(~clean).tolist():
        values, flags[i] = prepare(manifest, rows[i])
        matrix[i] = values
    return matrix, flags, plain


class Scorer:
    """Scores batches of tasks with the models of a registry."""

    def __init__(
        self,
        registry: ModelRegistry,
        observe: InferenceObserver | None = None,
        top_k: int = TOP_K,
    ) -> None:
        if top_k < 0:
            raise ValueError("top_k must not be negative")
        self.registry = registry
        self.observe = observe
        self.top_k = top_k
        # By model key, the plain numbers of the model's rows in the last batch: the drift
        # monitor reads the same rows and takes them from here.
        self.read: dict[str, PlainNumbers] = {}

    def predict(self, tasks: Sequence[TaskSubmitted]) -> list[ScoreResult | Rejection]:
        """One result per task, in order. CPU-bound: call it from a worker thread."""
        results: list[ScoreResult | Rejection | None] = [None] * len(tasks)
        groups: dict[str, tuple[LoadedModel, list[int]]] = {}
        for i, task in enumerate(tasks):
            model = self.registry.get(task.task_type)
            if model is None:
                results[i] = Rejection(
                    task.task_id, f"no model serves task type {task.task_type!r}"
                )
                continue
            groups.setdefault(model.key, (model, []))[1].append(i)
        for model, indices in groups.values():
            batch = [tasks[i] for i in indices]
            for i, result in zip(indices, self._score(model, batch), strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _score(self, model: LoadedModel, tasks: Sequence[TaskSubmitted]) -> list[ScoreResult]:
        manifest = model.manifest
        matrix, all_flags, plain = _inputs(manifest, [task.features for task in tasks])
        if plain is not None:
            self.read[model.key] = plain
        else:
            self.read.pop(model.key, None)
        started = time.perf_counter()
        probabilities = _run(model, matrix)
        if self.observe is not None:
            self.observe(model, len(tasks), time.perf_counter() - started)
        predicted = np.argmax(probabilities, axis=1)
        explanations = explain(
            lambda rows: _run(model, rows), manifest, matrix, probabilities, predicted, self.top_k
        )
        out: list[ScoreResult] = []
        labels, ref = manifest.labels, model.ref
        # Python lists, not numpy rows: reading numpy scalars one by one is slow.
        for task, row_p, best, flags, explanation in zip(
            tasks, probabilities.tolist(), predicted.tolist(), all_flags, explanations, strict=True
        ):
            out.append(
                ScoreResult(
                    task_id=task.task_id,
                    task_type=task.task_type,
                    model=ref,
                    prediction=labels[best],
                    probabilities=dict(zip(labels, row_p, strict=True)),
                    confidence=min(max(row_p[best], 0.0), 1.0),
                    quality_flags=flags,
                    explanation=explanation,
                )
            )
        return out


def _run(model: LoadedModel, matrix: NDArray[np.float32]) -> NDArray[np.float64]:
    """One onnxruntime call: the probabilities, one row per input row, one column per label."""
    manifest = model.manifest
    _, raw = model.session.run(
        [manifest.tensors.label, manifest.tensors.probabilities],
        {manifest.tensors.input: matrix},
    )
    probabilities: NDArray[np.float64] = np.asarray(raw, dtype=np.float64)
    if probabilities.shape != (len(matrix), len(manifest.labels)):
        raise RuntimeError(
            f"model {model.key} answered shape {list(probabilities.shape)} "
            f"for {len(matrix)} rows and {len(manifest.labels)} labels"
        )
    return probabilities
