"""Drift monitoring with the real tumor screening model and its holdout data."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from tandem_cli import dataset
from tandem_scoring.columns import plain_numbers
from tandem_scoring.drift import (
    CONFIDENCE,
    DriftChange,
    DriftMonitor,
    DriftWatch,
    drift_control_event,
    psi,
)
from tandem_scoring.manifest import ModelManifest, NumericFeature
from tandem_scoring.registry import LoadedModel
from tandem_shared.control import ModelState, model_change, model_state
from tandem_shared.drift_votes import DriftVote
from tandem_shared.envelope import decode
from tandem_shared.events import EVENT_TYPES, FeatureValue

WINDOW = 1000
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _rows(matrix: NDArray[np.float64]) -> list[dict[str, FeatureValue]]:
    names = dataset.feature_names()
    return [{n: float(v) for n, v in zip(names, row, strict=True)} for row in matrix]


def _confidences(model: LoadedModel, matrix: NDArray[np.float64]) -> list[float]:
    tensors = model.manifest.tensors
    _, raw = model.session.run(
        [tensors.label, tensors.probabilities], {tensors.input: matrix.astype(np.float32)}
    )
    return [float(p) for p in np.asarray(raw).max(axis=1)]


def _stream(
    model: LoadedModel,
    monitor: DriftMonitor,
    seed: int,
    batches: int,
    shift: dict[str, float] | None = None,
) -> list[DriftChange]:
    """Feed batches of 100 holdout rows drawn with replacement, some features shifted."""
    rng = np.random.default_rng(seed)
    holdout = dataset.holdout_split()
    names = dataset.feature_names()
    changes: list[DriftChange] = []
    for _ in range(batches):
        matrix = holdout.features[rng.integers(0, len(holdout), 100)].copy()
        for name, by in (shift or {}).items():
            matrix[:, names.index(name)] += by
        changes += monitor.observe(_rows(matrix), _confidences(model, matrix))
    return changes


def _half_std(manifest: ModelManifest, name: str) -> float:
    [spec] = [f for f in manifest.features if f.name == name]
    assert isinstance(spec, NumericFeature) and spec.reference and spec.reference.std
    return 0.5 * spec.reference.std


def test_psi_matches_a_hand_computed_case() -> None:
    expected = [0.5, 0.3, 0.2]
    counts = [40, 40, 20]  # shares 0.4, 0.4, 0.2
    by_hand = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.4 - 0.3) * math.log(0.4 / 0.3)
    assert psi(expected, counts) == pytest.approx(by_hand)
    assert psi(expected, [50, 30, 20]) == pytest.approx(0.0)
    # An empty bin counts as epsilon: large, but finite.
    assert psi([0.5, 0.5], [10, 0], epsilon=1e-4) == pytest.approx(
        (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    )
    with pytest.raises(ValueError, match="2 reference shares for 3 bins"):
        psi([0.5, 0.5], [1, 2, 3])
    with pytest.raises(ValueError, match="undefined"):
        psi([0.5, 0.5], [0, 0])


def test_monitor_watches_every_feature_and_the_confidence(reference_model: LoadedModel) -> None:
    monitor = DriftMonitor(reference_model.manifest)
    assert monitor.watched == [*dataset.feature_names(), CONFIDENCE]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_unshifted_holdout_data_raises_no_alarm(reference_model: LoadedModel, seed: int) -> None:
    # Judged on full windows: the 171 holdout rows sit up to ~0.11 PSI from the 398-row
    # reference on their own, so a fuller window keeps resampling noise under the threshold.
    monitor = DriftMonitor(reference_model.manifest, window=WINDOW, min_count=WINDOW)
    assert _stream(reference_model, monitor, seed, batches=40) == []
    current = monitor.current()
    assert set(current) == set(monitor.watched)
    assert max(current.values()) < monitor.threshold
    assert monitor.drifting() == []


@pytest.mark.parametrize("feature", ["mean_radius", "worst_texture", "mean_concavity"])
def test_half_a_std_shift_raises_the_alarm_for_that_feature(
    reference_model: LoadedModel, feature: str
) -> None:
    manifest = reference_model.manifest
    monitor = DriftMonitor(manifest, window=WINDOW, min_count=WINDOW)
    changes = _stream(
        reference_model, monitor, 21, batches=15, shift={feature: _half_std(manifest, feature)}
    )
    alarmed = {c.feature for c in changes if c.drifting and c.feature != CONFIDENCE}
    assert alarmed == {feature}
    [alarm] = [c for c in changes if c.feature == feature]
    assert (alarm.model, alarm.version, alarm.drifting) == ("tumor_screening", "1", True)
    assert alarm.psi >= monitor.threshold
    assert monitor.current()[feature] >= monitor.threshold


def test_recovery_is_reported_once(reference_model: LoadedModel) -> None:
    manifest = reference_model.manifest
    feature = "mean_radius"
    monitor = DriftMonitor(manifest, window=WINDOW, min_count=WINDOW)
    shifted = _stream(
        reference_model, monitor, 31, batches=12, shift={feature: _half_std(manifest, feature)}
    )
    assert [c.drifting for c in shifted if c.feature == feature] == [True]
    assert feature in monitor.drifting()
    # Clean data slides the shifted values out of the window: one recovery, no new alarm.
    after = _stream(reference_model, monitor, 32, batches=30)
    changes = [c for c in after if c.feature == feature]
    assert [c.drifting for c in changes] == [False]
    assert changes[0].psi < monitor.recovery * monitor.threshold
    assert feature not in monitor.drifting()


def test_no_alarm_below_min_count(reference_model: LoadedModel) -> None:
    monitor = DriftMonitor(reference_model.manifest, window=WINDOW, min_count=200)
    far = [{"mean_radius": 30.0}]
    assert monitor.observe(far * 199, []) == []
    assert monitor.current() == {}
    [change] = monitor.observe(far, [])
    assert (change.feature, change.drifting) == ("mean_radius", True)
    assert set(monitor.current()) == {"mean_radius"}


@pytest.mark.parametrize("sizes", [[37] * 20, [250, 3, 999, 1], [2500], [60, 1500, 45]])
def test_window_keeps_only_the_newest_values(
    reference_model: LoadedModel, sizes: list[int]
) -> None:
    window = 100
    monitor = DriftMonitor(reference_model.manifest, window=window, min_count=1)
    rng = np.random.default_rng(5)
    seen: list[float] = []
    for size in sizes:
        values = rng.normal(14.0, 4.0, size)
        seen += [float(v) for v in values]
        monitor.observe([{"mean_radius": float(v)} for v in values], [])
        assert monitor.size("mean_radius") == min(len(seen), window)
    spec = reference_model.manifest.features[0]
    assert spec.name == "mean_radius" and spec.reference is not None
    newest = np.searchsorted(spec.reference.bin_edges, seen[-window:], side="right")
    counts = np.bincount(newest, minlength=len(spec.reference.bin_fractions))
    assert monitor.current()["mean_radius"] == pytest.approx(
        psi(spec.reference.bin_fractions, counts)
    )
    assert monitor.size("mean_texture") == 0  # never sent


def test_features_whose_windows_differ_are_each_kept_apart(
    reference_model: LoadedModel,
) -> None:
    """Features that got different numbers of values (some rows lack them) fill their windows
    at their own pace; each one's PSI is that of its own newest values."""
    window = 50
    monitor = DriftMonitor(reference_model.manifest, window=window, min_count=1)
    rng = np.random.default_rng(8)
    names = ["mean_radius", "mean_texture", "mean_area"]
    seen: dict[str, list[float]] = {n: [] for n in names}
    # Then batches where all three come as many times: their windows are still in different
    # states (filled, and where the next value goes), and must move apart.
    # Batches shorter than the window, so every window wraps and evicts its own oldest values.
    plan = [(12, 0.7), (5, 1.0), (9, 1.0), (20, 0.7), (7, 1.0), (15, 1.0), (30, 1.0), (4, 1.0)]
    for size, share in plan:
        rows: list[dict[str, FeatureValue]] = []
        for _ in range(size):
            row = {n: float(rng.normal(15.0, 5.0)) for n in names if rng.random() < share}
            rows.append(row)
            for n, v in row.items():
                seen[n].append(v)
        monitor.observe(rows, [])
        assert [monitor.size(n) for n in names] == [min(len(seen[n]), window) for n in names]
    current = monitor.current()
    for spec in reference_model.manifest.features:
        if spec.name not in names:
            continue
        assert spec.reference is not None
        newest = np.searchsorted(spec.reference.bin_edges, seen[spec.name][-window:], side="right")
        counts = np.bincount(newest, minlength=len(spec.reference.bin_fractions))
        assert current[spec.name] == pytest.approx(psi(spec.reference.bin_fractions, counts))


def _mixed_manifest() -> ModelManifest:
    def ref(fractions: list[float]) -> dict[str, Any]:
        edges = [i + 0.5 for i in range(len(fractions) - 1)]
        return {"bin_edges": edges, "bin_fractions": fractions}

    return ModelManifest.model_validate(
        {
            "name": "mixed",
            "version": "2",
            "task_types": ["mixed"],
            "features": [
                {"name": "x", "order": 0, "type": "numeric", "min": 0, "max": 9, "impute": 1,
                 "reference": ref([0.5, 0.5])},
                {"name": "flag", "order": 1, "type": "boolean", "impute": False,
                 "reference": ref([0.5, 0.5])},
                {"name": "kind", "order": 2, "type": "categorical", "encoding": "one_hot",
                 "categories": ["a", "b", "c"], "impute": "a",
                 "reference": ref([0.2, 0.3, 0.5])},
                {"name": "free", "order": 3, "type": "numeric", "min": 0, "max": 1, "impute": 0},
            ],
            "labels": ["no", "yes"],
            "tensors": {"input": "x", "label": "label", "probabilities": "probabilities"},
            "metrics": {"holdout_accuracy": 1, "roc_auc": 1, "train_rows": 1, "holdout_rows": 0},
            "dataset": {"source": "test", "split": "none", "fingerprint": "0" * 64},
            "training": {"algorithm": "none"},
            "model_sha256": "0" * 64,
            "created_at": "2026-01-01T00:00:00Z",
        }
    )  # fmt: skip


def test_values_are_counted_by_feature_type() -> None:
    monitor = DriftMonitor(_mixed_manifest(), window=10, min_count=1)
    assert monitor.watched == ["x", "flag", "kind"]  # no reference, no confidence: not watched
    rows: list[dict[str, FeatureValue]] = [
        {"x": 0.0, "flag": True, "kind": "b", "free": 0.3},
        {"x": True, "flag": 0, "kind": "z"},  # a boolean number counts; an unknown category not
        {"x": "7", "flag": "yes", "kind": 3},  # wrong types are not counted
        {"x": math.nan, "flag": None, "kind": None},
        {"x": 10**400},  # beyond float: not counted
        {},
    ]
    monitor.observe(rows, [0.9])
    assert (monitor.size("x"), monitor.size("flag"), monitor.size("kind")) == (2, 2, 1)
    current = monitor.current()
    assert current["x"] == pytest.approx(psi([0.5, 0.5], [1, 1]))
    assert current["flag"] == pytest.approx(0.0)
    assert current["kind"] == pytest.approx(psi([0.2, 0.3, 0.5], [0, 1, 0]))


def test_numbers_the_scorer_read_count_as_reading_them_again() -> None:
    rows: list[dict[str, FeatureValue]] = [
        {"x": 0.0, "free": 0.3},
        {"x": 2.0},  # clean in x alone, not in the scorer's read of x and free
        {"x": 1, "free": math.inf},
        {"x": True, "free": 0.1},
        {"x": "7", "free": 0.2},
        {"x": 12.5, "free": 0.4},  # out of range: still counted, it is drift
    ]
    alone = DriftMonitor(_mixed_manifest(), window=10, min_count=1)
    shared = DriftMonitor(_mixed_manifest(), window=10, min_count=1)
    alone.observe(rows, [])
    read = plain_numbers(["free", "x"], rows)
    assert read.covers(["x"], len(rows)) and not read.covers(["x", "y"], len(rows))
    shared.observe(rows, [], read)
    assert shared.size("x") == alone.size("x") == 5
    assert shared.current() == alone.current()
    # A read of other rows (a different count) is not used.
    assert not read.covers(["x"], len(rows) - 1)


def test_hysteresis_keeps_the_state_between_the_two_levels() -> None:
    # Reference 50/50: a window with share ``a`` in the upper bin has PSI (a - 0.5) ln(a / (1 - a)).
    monitor = DriftMonitor(_mixed_manifest(), window=100, min_count=100)

    def feed(upper: int) -> list[bool]:
        rows: list[dict[str, FeatureValue]] = [{"x": 0.0}] * (100 - upper) + [{"x": 1.0}] * upper
        return [c.drifting for c in monitor.observe(rows, [])]

    assert feed(75) == [True]  # PSI 0.275: alarm
    assert feed(70) == []  # 0.169: under the threshold, above 0.8 of it: still drifting
    assert monitor.drifting() == ["x"]
    assert feed(65) == [False]  # 0.093: recovered
    assert feed(70) == []  # 0.169 again: not enough to alarm anew
    assert monitor.drifting() == []


def test_control_event_of_a_change() -> None:
    change = DriftChange("tumor_screening", "1", "mean_radius", 0.31, True)
    event = drift_control_event(change, "scoring", AT, "scoring-0")
    assert event.subject == "drift/tumor_screening/1/mean_radius/scoring-0"
    assert (event.source, event.time, event.type) == (
        "tandem/scoring",
        AT,
        "tandem.control.changed.v1",
    )
    data = event.data
    assert (data.kind, data.name, data.changed_by, data.changed_at) == (
        "drift",
        "tumor_screening",
        "tandem/scoring",
        AT,
    )
    assert data.value == {
        "feature": "mean_radius",
        "psi": 0.31,
        "drifting": True,
        "version": "1",
        "replica": "scoring-0",
    }
    assert DriftVote.of(data) == DriftVote(
        "tumor_screening", "1", "mean_radius", "scoring-0", True, 0.31, AT
    )
    # Deterministic: the same change at the same time is the same event; a recovery is not.
    assert drift_control_event(change, "scoring", AT, "scoring-0").id == event.id
    recovered = DriftChange("tumor_screening", "1", "mean_radius", 0.1, False)
    assert drift_control_event(recovered, "scoring", AT, "scoring-0").id != event.id
    decoded = decode(event.value(), event.headers(), EVENT_TYPES)
    assert decoded.subject == event.subject and decoded.data == data


def test_a_drift_record_is_never_read_as_a_model_state() -> None:
    drift = drift_control_event(
        DriftChange("tumor_screening", "1", "mean_radius", 0.31, True), "scoring", AT, "s-0"
    )
    # The control topic is read as {key: latest change}; drift has keys of its own.
    changes = {drift.subject: drift.data}
    assert model_state(changes, "tumor_screening") is None
    state = model_change("tumor_screening", ModelState(live="1"), "admin")
    changes[state.subject] = state.data
    assert model_state(changes, "tumor_screening") == ModelState(live="1")


def test_a_restarted_replica_keeps_its_alarm_until_a_full_window_says_it_is_over(
    reference_model: LoadedModel,
) -> None:
    """Before a restart the replica voted mean_radius into alarm; after it, the alarm is
    repeated while its empty window cannot judge, and recovered once clean data fills it."""
    manifest = reference_model.manifest
    watch = DriftWatch(window=WINDOW, threshold=0.2, min_count=WINDOW)
    watch.inherit("tumor_screening", "1", "mean_radius", 0.31)
    assert watch.alarms() == [DriftChange("tumor_screening", "1", "mean_radius", 0.31, True)]
    rng = np.random.default_rng(41)
    holdout = dataset.holdout_split()
    changes: list[DriftChange] = []
    for batch in range(15):
        matrix = holdout.features[rng.integers(0, len(holdout), 100)]
        changes += watch.observe(
            [manifest], [_rows(matrix)], [_confidences(reference_model, matrix)]
        )
        if batch < 9:  # fewer than WINDOW values: nothing judged, the alarm held and repeated
            assert changes == []
            [held] = watch.alarms()
            assert (held.feature, held.drifting) == ("mean_radius", True)
    assert [(c.feature, c.drifting) for c in changes] == [("mean_radius", False)]
    assert watch.alarms() == []


def test_a_replica_repeats_the_alarms_its_windows_hold(reference_model: LoadedModel) -> None:
    manifest = reference_model.manifest
    watch = DriftWatch(window=WINDOW, threshold=0.2, min_count=WINDOW)
    assert watch.alarms() == []
    rng = np.random.default_rng(21)
    holdout, names = dataset.holdout_split(), dataset.feature_names()
    for _ in range(15):
        matrix = holdout.features[rng.integers(0, len(holdout), 100)].copy()
        matrix[:, names.index("mean_radius")] += _half_std(manifest, "mean_radius")
        watch.observe([manifest], [_rows(matrix)], [_confidences(reference_model, matrix)])
    alarms = [a for a in watch.alarms() if a.feature != CONFIDENCE]
    assert [(a.feature, a.drifting) for a in alarms] == [("mean_radius", True)]
    assert alarms[0].psi is not None and alarms[0].psi >= 0.2
