"""Explanations: hand-computed cases, then the real linear and occlusion models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from tandem_scoring.explain import explain, linear, occluded, occlusion, reference_row, top
from tandem_scoring.manifest import ModelManifest
from tandem_scoring.registry import LoadedModel, ModelRegistry, edge_rows, reference_rows
from tandem_scoring.scorer import Scorer, ScoreResult
from tandem_shared.events import TaskSubmitted

from tests.scoring.test_scorer import CountingSession, clean_features, fake_model, holdout_tasks


def manifest(features: list[dict[str, Any]], explanation: dict[str, Any]) -> ModelManifest:
    return ModelManifest.model_validate(
        {
            "name": "tiny",
            "version": "1",
            "task_types": ["tiny"],
            "features": features,
            "labels": ["no", "yes"],
            "tensors": {"input": "x", "label": "label", "probabilities": "probabilities"},
            "explanation": explanation,
            "metrics": {"holdout_accuracy": 1, "roc_auc": 1, "train_rows": 1, "holdout_rows": 0},
            "dataset": {"source": "test", "split": "none", "fingerprint": "0" * 64},
            "training": {"algorithm": "by hand"},
            "model_sha256": "0" * 64,
            "created_at": "2026-01-01T00:00:00Z",
        }
    )


LINEAR = manifest(
    [
        {"name": "a", "order": 0, "type": "numeric", "min": -9, "max": 9, "impute": 1},
        {"name": "b", "order": 1, "type": "numeric", "min": -9, "max": 19, "impute": 4},
        {"name": "flag", "order": 2, "type": "boolean", "impute": False},
    ],
    {
        "method": "linear",
        "positive": "yes",
        "coefficients": {"a": 2.0, "b": -0.5, "flag": 1.5},
        "intercept": 0.25,
    },
)

# "a" is numeric with reference 0, "c" one-hot over x, y, z with reference x.
OCCLUSION = manifest(
    [
        {"name": "a", "order": 0, "type": "numeric", "min": 0, "max": 1, "impute": 0},
        {
            "name": "c",
            "order": 1,
            "type": "categorical",
            "categories": ["x", "y", "z"],
            "encoding": "one_hot",
            "impute": "x",
        },
    ],
    {"method": "occlusion"},
)


def pairs(contributions: Sequence[Any]) -> list[tuple[str, float]]:
    return [(c.feature, c.contribution) for c in contributions]


def test_linear_by_hand() -> None:
    matrix = np.array([[3, 4, 0], [0, 10, 1]], dtype=np.float32)
    # Row 0: a 2*(3-1) = 4, b -0.5*(4-4) = 0, flag 1.5*(0-0) = 0.
    # Row 1: a 2*(0-1) = -2, b -0.5*(10-4) = -3, flag 1.5*(1-0) = 1.5.
    assert linear(LINEAR, matrix).tolist() == [[4.0, 0.0, 0.0], [-2.0, -3.0, 1.5]]
    probabilities = np.zeros((2, 2))
    predicted = np.zeros(2, dtype=np.intp)
    explained = explain(_never, LINEAR, matrix, probabilities, predicted, k=2)
    assert [pairs(row) for row in explained] == [
        [("a", 4.0), ("b", 0.0)],
        [("b", -3.0), ("a", -2.0)],
    ]


def tiny_predict(matrix: NDArray[np.float32]) -> NDArray[np.float64]:
    """P(yes) = 0.5 a + 0.4 [c is y] + 0.2 [c is z]."""
    yes = 0.5 * matrix[:, 0] + 0.4 * matrix[:, 2] + 0.2 * matrix[:, 3]
    return np.stack([1 - yes, yes], axis=1).astype(np.float64)


def _never(matrix: NDArray[np.float32]) -> NDArray[np.float64]:
    raise AssertionError("this explanation needs no model call")


def test_occlusion_by_hand() -> None:
    matrix = np.array(
        [
            [1.0, 0, 0, 1],  # a=1, c=z: P(yes) 0.7
            [0.4, 0, 1, 0],  # a=0.4, c=y: P(yes) 0.6
            [0.0, 1, 0, 0],  # at reference: P(no) 1
        ],
        dtype=np.float32,
    )
    calls: list[NDArray[np.float32]] = []

    def predict(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        calls.append(rows)
        return tiny_predict(rows)

    probabilities = tiny_predict(matrix)
    predicted = np.argmax(probabilities, axis=1)
    assert predicted.tolist() == [1, 1, 0]
    contributions = occlusion(predict, OCCLUSION, matrix, probabilities, predicted)
    [stacked] = calls
    assert stacked.shape == (6, 4) and stacked.dtype == np.float32
    # Row 0 with a at reference, then with c's three columns at x's encoding.
    assert stacked[:2].tolist() == [[0, 0, 0, 1], [1, 1, 0, 0]]
    # Row 0: a -> 0 leaves P(yes) 0.2 (0.7 - 0.2), c -> x leaves 0.5 (0.7 - 0.5).
    # Row 1: a -> 0 leaves 0.4 (0.6 - 0.4), c -> x leaves 0.2 (0.6 - 0.2).
    # Row 2 is the reference row: nothing changes.
    assert contributions == pytest.approx(np.array([[0.5, 0.2], [0.2, 0.4], [0.0, 0.0]]))
    explained = top(["a", "c"], contributions, k=5)
    assert [[f for f, _ in pairs(row)] for row in explained] == [["a", "c"], ["c", "a"], ["a", "c"]]
    assert pairs(explained[1])[0][1] == pytest.approx(0.4)


def test_occlusion_is_signed() -> None:
    matrix = np.array([[0.0, 0, 0, 1]], dtype=np.float32)  # a=0, c=z: P(no) 0.8
    probabilities = tiny_predict(matrix)
    contributions = occlusion(tiny_predict, OCCLUSION, matrix, probabilities, np.array([0]))
    # c -> x raises P(no) to 1: c at z pulled the predicted label down by 0.2.
    assert contributions == pytest.approx(np.array([[0.0, -0.2]]))


def test_occluded_rows_follow_row_then_feature() -> None:
    matrix = np.array([[1.0, 0, 1, 0], [0.5, 0, 0, 1]], dtype=np.float32)
    assert occluded(OCCLUSION, matrix).tolist() == [
        [0, 0, 1, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 1],
        [0.5, 1, 0, 0],
    ]
    assert reference_row(OCCLUSION).tolist() == [0, 1, 0, 0]


def test_none_and_zero_k_give_no_explanation() -> None:
    matrix = np.array([[0.3, 2.0]], dtype=np.float32)
    none = fake_model().manifest
    assert explain(_never, none, matrix, np.zeros((1, 2)), np.zeros(1, dtype=np.intp)) == [[]]
    row = np.zeros((1, 4), dtype=np.float32)
    assert explain(_never, OCCLUSION, row, np.zeros((1, 2)), np.zeros(1, dtype=np.intp), k=0) == [
        []
    ]
    model = fake_model()
    [result] = Scorer(ModelRegistry({"fake": model})).predict(
        [TaskSubmitted(task_id="f", task_type="fake", features={"p": 0.9, "z": 3})]
    )
    assert isinstance(result, ScoreResult) and result.to_score().explanation == []
    session = model.session
    assert isinstance(session, CountingSession) and len(session.inputs) == 1


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_linear_contributions_sum_to_the_models_log_odds(reference_model: LoadedModel) -> None:
    manifest = reference_model.manifest
    positive = manifest.labels.index("malignant")
    [at_reference] = reference_model.session.run(
        [manifest.tensors.probabilities],
        {manifest.tensors.input: reference_row(manifest)[np.newaxis, :]},
    )
    base = _logit(float(at_reference[0][positive]))
    scorer = Scorer(ModelRegistry({"tumor_screening": reference_model}), top_k=30)
    checked = 0
    for result in scorer.predict(holdout_tasks()):
        assert isinstance(result, ScoreResult) and len(result.explanation) == 30
        p = result.probabilities["malignant"]
        if not 1e-4 < p < 1 - 1e-4:
            continue  # float32 probabilities this close to 0 or 1 lose their log-odds
        total = sum(c.contribution for c in result.explanation)
        assert total == pytest.approx(_logit(p) - base, abs=2e-3)
        checked += 1
    assert checked > 50


def test_linear_default_is_the_top_five(reference_model: LoadedModel) -> None:
    registry = ModelRegistry({"tumor_screening": reference_model})
    task = TaskSubmitted(task_id="t", task_type="tumor_screening", features=clean_features())
    [five] = Scorer(registry).predict([task])
    [every] = Scorer(registry, top_k=30).predict([task])
    assert isinstance(five, ScoreResult) and isinstance(every, ScoreResult)
    assert five.explanation == every.explanation[:5]
    sizes = [abs(c.contribution) for c in every.explanation]
    assert sizes == sorted(sizes, reverse=True)
    assert five.to_score().explanation == five.explanation


def wine_tasks(model: LoadedModel) -> list[TaskSubmitted]:
    manifest = model.manifest
    names = [f.name for f in manifest.ordered_features]
    rows = np.vstack([reference_rows(manifest), edge_rows(manifest)])
    return [
        TaskSubmitted(
            task_id=f"w-{i}",
            task_type="wine_cultivar",
            features={n: float(v) for n, v in zip(names, row, strict=True)},
        )
        for i, row in enumerate(rows)
    ]


def _probabilities(session: Any, manifest: ModelManifest, rows: NDArray[np.float32]) -> Any:
    [raw] = session.run([manifest.tensors.probabilities], {manifest.tensors.input: rows})
    return np.asarray(raw, dtype=np.float64)


def test_occlusion_on_the_real_model_is_one_extra_call(registry: ModelRegistry) -> None:
    wine = registry.get("wine_cultivar")
    assert wine is not None
    manifest = wine.manifest
    counting = CountingSession(wine.session)
    scorer = Scorer(ModelRegistry({"wine_cultivar": LoadedModel(manifest, counting)}), top_k=13)
    tasks = wine_tasks(wine)
    results = scorer.predict(tasks)
    assert [m.shape for m in counting.inputs] == [(len(tasks), 13), (len(tasks) * 13, 13)]
    names = [f.name for f in manifest.ordered_features]
    reference = reference_row(manifest)
    moved = 0
    for result, row in zip(results, counting.inputs[0], strict=True):
        assert isinstance(result, ScoreResult) and len(result.explanation) == 13
        best = manifest.labels.index(result.prediction)
        p = _probabilities(wine.session, manifest, row[np.newaxis, :])[0, best]
        got = {c.feature: c.contribution for c in result.explanation}
        for f, name in enumerate(names):
            without = row.copy()
            without[f] = reference[f]
            want = p - _probabilities(wine.session, manifest, without[np.newaxis, :])[0, best]
            assert got[name] == pytest.approx(want, abs=1e-6)
            moved += abs(want) > 1e-3
    assert moved > 0  # the rows are not all at the reference: something was explained


def test_wine_default_explains_five_features_largest_first(registry: ModelRegistry) -> None:
    wine = registry.get("wine_cultivar")
    assert wine is not None
    results = Scorer(registry).predict(wine_tasks(wine))
    for result in results:
        assert isinstance(result, ScoreResult) and len(result.explanation) == 5
        sizes = [abs(c.contribution) for c in result.explanation]
        assert sizes == sorted(sizes, reverse=True)
