"""The scoring core with the real ONNX model (and a tiny fake one beside it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from tandem_cli import dataset
from tandem_scoring.manifest import ModelManifest
from tandem_scoring.registry import LoadedModel, ModelRegistry
from tandem_scoring.scorer import Rejection, Scorer, ScoreResult, prepare
from tandem_shared.events import TaskSubmitted


class CountingSession:
    """A thin wrapper that counts onnxruntime calls and remembers the matrices passed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.inputs: list[np.ndarray[Any, Any]] = []

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any]) -> list[Any]:
        [matrix] = input_feed.values()
        self.inputs.append(matrix)
        result: list[Any] = self.inner.run(output_names, input_feed)
        return result


class FakeSession:
    """A two-feature model: P(yes) is the first feature, whatever the second says."""

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any]) -> list[Any]:
        x = np.asarray(input_feed["x"])
        p = np.clip(x[:, :1], 0, 1)
        probabilities = np.hstack([1 - p, p]).astype(np.float32)
        labels = np.where(p[:, 0] >= 0.5, "yes", "no")
        return [labels, probabilities]


def fake_model() -> LoadedModel:
    manifest = ModelManifest.model_validate(
        {
            "name": "fake",
            "version": "1",
            "task_types": ["fake"],
            "features": [
                {"name": "p", "order": 0, "type": "numeric", "min": 0, "max": 1, "impute": 0.5},
                {"name": "z", "order": 1, "type": "numeric", "min": 0, "max": 9, "impute": 1},
            ],
            "labels": ["no", "yes"],
            "tensors": {"input": "x", "label": "label", "probabilities": "probabilities"},
            "metrics": {"holdout_accuracy": 1, "roc_auc": 1, "train_rows": 1, "holdout_rows": 0},
            "dataset": {"source": "test", "split": "none", "fingerprint": "0" * 64},
            "training": {"algorithm": "identity"},
            "model_sha256": "0" * 64,
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
    return LoadedModel(manifest, CountingSession(FakeSession()))


def holdout_tasks() -> list[TaskSubmitted]:
    holdout = dataset.holdout_split()
    names = dataset.feature_names()
    return [
        TaskSubmitted(
            task_id=f"h-{i}",
            task_type="tumor_screening",
            features={n: float(v) for n, v in zip(names, row, strict=True)},
        )
        for i, row in enumerate(holdout.features)
    ]


def clean_features() -> dict[str, float]:
    body, _ = dataset.sample_tasks(1, seed=99)[0]
    features: dict[str, float] = body["features"]
    return features


def task(features: Mapping[str, Any], task_type: str = "tumor_screening", n: int = 0) -> Any:
    return TaskSubmitted(task_id=f"t-{n}", task_type=task_type, features=dict(features))


def test_matches_the_sklearn_pipeline_on_every_holdout_row(
    registry: ModelRegistry, training: ModuleType
) -> None:
    pipeline = training.train_pipeline(dataset.train_split())
    expected = pipeline.predict_proba(dataset.holdout_split().features)
    classes = [str(c) for c in pipeline.classes_]
    results = Scorer(registry).predict(holdout_tasks())
    assert len(results) == len(expected)
    for result, want, predicted in zip(
        results, expected, pipeline.predict(dataset.holdout_split().features), strict=True
    ):
        assert isinstance(result, ScoreResult)
        assert result.quality_flags == []
        for label, p in zip(classes, want, strict=True):
            assert result.probabilities[label] == pytest.approx(p, abs=1e-5)
        assert result.prediction == predicted
        assert result.confidence == pytest.approx(max(want), abs=1e-5)
        assert (result.model.name, result.model.version) == ("tumor_screening", "1")


def test_sampled_tasks_score_clean_and_accurate(registry: ModelRegistry) -> None:
    samples = dataset.sample_tasks(200, seed=21)
    results = Scorer(registry).predict([TaskSubmitted.model_validate(b) for b, _ in samples])
    assert all(isinstance(r, ScoreResult) and not r.quality_flags for r in results)
    correct = sum(
        r.prediction == label
        for r, (_, label) in zip(results, samples, strict=True)
        if isinstance(r, ScoreResult)
    )
    assert correct / len(samples) > 0.9


def test_one_inference_call_per_model_per_batch(reference_model: LoadedModel) -> None:
    counting = CountingSession(reference_model.session)
    real = LoadedModel(reference_model.manifest, counting)
    fake = fake_model()
    scorer = Scorer(ModelRegistry({"tumor_screening": real, "fake": fake}))
    tumors = [task(clean_features(), n=i) for i in range(7)]
    fakes = [task({"p": 0.2 * i, "z": 2}, "fake", n=100 + i) for i in range(5)]
    batch = [t for pair in zip(tumors, fakes, strict=False) for t in pair] + tumors[5:]
    results = scorer.predict(batch)
    assert len(counting.inputs) == 1
    assert counting.inputs[0].shape == (7, 30) and counting.inputs[0].dtype == np.float32
    fake_session = fake.session
    assert isinstance(fake_session, CountingSession) and len(fake_session.inputs) == 1
    assert [r.task_id for r in results] == [t.task_id for t in batch]
    by_id = {r.task_id: r for r in results if isinstance(r, ScoreResult)}
    assert by_id["t-104"].prediction == "yes" and by_id["t-101"].prediction == "no"
    assert by_id["t-104"].probabilities["yes"] == pytest.approx(0.8, abs=1e-6)


def test_unknown_task_type_is_rejected_and_the_rest_scored(registry: ModelRegistry) -> None:
    results = Scorer(registry).predict(
        [task(clean_features(), n=0), task({}, "loan_application", n=1)]
    )
    assert isinstance(results[0], ScoreResult)
    assert results[1] == Rejection("t-1", "no model serves task type 'loan_application'")


def test_empty_batch(registry: ModelRegistry) -> None:
    assert Scorer(registry).predict([]) == []


@pytest.mark.parametrize(
    ("value", "code", "scored_as"),
    [
        (None, "missing", "impute"),
        ("12.5", "wrong_type", "impute"),
        (math.nan, "not_finite", "impute"),
        (math.inf, "not_finite", "impute"),
        (-math.inf, "not_finite", "impute"),
        (10**400, "not_finite", "impute"),
        (1e39, "not_finite", "impute"),
        (1e6, "out_of_range", "max"),
        (-5.0, "out_of_range", "min"),
    ],
)
def test_quality_flags(reference_model: LoadedModel, value: Any, code: str, scored_as: str) -> None:
    manifest = reference_model.manifest
    spec = manifest.ordered_features[0]
    features: dict[str, Any] = {**clean_features(), spec.name: value}
    row, flags = prepare(manifest, features)
    assert [(f.code, f.feature) for f in flags] == [(code, spec.name)]
    assert row[0] == getattr(spec, scored_as)
    [result] = Scorer(ModelRegistry({"tumor_screening": reference_model})).predict([task(features)])
    assert isinstance(result, ScoreResult)
    assert [f.code for f in result.quality_flags] == [code]
    assert 0.5 <= result.confidence <= 1.0


def test_absent_feature_is_missing(reference_model: LoadedModel) -> None:
    features = clean_features()
    del features["worst_area"]
    row, flags = prepare(reference_model.manifest, features)
    [flag] = flags
    assert (flag.code, flag.feature) == ("missing", "worst_area")
    assert "absent" in flag.detail
    spec = next(f for f in reference_model.manifest.features if f.name == "worst_area")
    assert row[spec.order] == spec.impute


def test_booleans_count_as_zero_and_one() -> None:
    manifest = fake_model().manifest
    assert prepare(manifest, {"p": True, "z": False}) == ([1.0, 0.0], [])


def test_unknown_features_are_flagged_a_few_at_a_time(reference_model: LoadedModel) -> None:
    features: dict[str, Any] = {**clean_features(), "colour": "red"}
    _, flags = prepare(reference_model.manifest, features)
    assert [(f.code, f.feature) for f in flags] == [("unknown_feature", "colour")]
    many = {**clean_features(), **{f"extra_{i:02d}": 1.0 for i in range(20)}}
    _, flags = prepare(reference_model.manifest, many)
    assert len(flags) == 6 and flags[-1].feature == "*" and "15 more" in flags[-1].detail


def test_every_feature_missing_is_still_scored(registry: ModelRegistry) -> None:
    [result] = Scorer(registry).predict([task({})])
    assert isinstance(result, ScoreResult)
    assert len(result.quality_flags) == 30
    assert {f.code for f in result.quality_flags} == {"missing"}
    assert result.prediction in dataset.LABELS
    score = result.to_score()
    assert sum(score.probabilities.values()) == pytest.approx(1)
    # Every feature sits at its reference value, so none of them moved the prediction.
    assert len(score.explanation) == 5
    assert all(c.contribution == 0 for c in score.explanation)


def test_observer_sees_each_inference(reference_model: LoadedModel) -> None:
    seen: list[tuple[str, int]] = []
    scorer = Scorer(
        ModelRegistry({"tumor_screening": reference_model}),
        observe=lambda model, rows, seconds: seen.append((model.key, rows)),
    )
    scorer.predict([task(clean_features(), n=i) for i in range(4)])
    assert seen == [("tumor_screening/1", 4)]


def test_a_mixed_batch_is_read_as_each_row_alone(reference_model: LoadedModel) -> None:
    """Clean rows take one numpy pass and the others the per-value rules: the input matrix and
    the flags must be what ``prepare`` makes of every row by itself."""
    manifest = reference_model.manifest
    first = manifest.ordered_features[0].name
    clean = clean_features()
    odd: list[dict[str, Any]] = [
        {**clean, first: value} for value in (None, "1", math.nan, 10**400, 1e39, 1e6, True)
    ]
    odd += [{k: v for k, v in clean.items() if k != first}, {**clean, "extra": 1.0}]
    rows = [clean, *odd, {**clean, first: int(clean[first])}]
    counting = CountingSession(reference_model.session)
    model = LoadedModel(manifest, counting)
    results = Scorer(ModelRegistry({"tumor_screening": model})).predict(
        [task(r, n=i) for i, r in enumerate(rows)]
    )
    matrix = counting.inputs[0]
    for i, row in enumerate(rows):
        expected, flags = prepare(manifest, row)
        np.testing.assert_array_equal(matrix[i], np.asarray(expected, dtype=np.float32))
        result = results[i]
        assert isinstance(result, ScoreResult)
        assert result.quality_flags == flags
    # Only the two clean rows (one with an int where floats are usual) have no flag.
    flagged = [bool(r.quality_flags) for r in results if isinstance(r, ScoreResult)]
    assert flagged == [False, *[True] * (len(rows) - 2), False]
