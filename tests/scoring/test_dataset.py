"""The reference data set: a fixed split and a deterministic, valid task sampler."""

from __future__ import annotations

import numpy as np
import pytest
from tandem_cli import dataset
from tandem_shared.events import TaskSubmitted


def test_split_is_fixed_stratified_and_disjoint() -> None:
    train, holdout = dataset.train_split(), dataset.holdout_split()
    assert (len(train), len(holdout)) == (398, 171)
    assert train.features.shape == (398, 30) and holdout.features.shape == (171, 30)
    for split in (train, holdout):
        share = float(np.mean(split.labels == "malignant"))
        assert share == pytest.approx(212 / 569, abs=0.01)
    train_rows = {row.tobytes() for row in train.features}
    assert not any(row.tobytes() in train_rows for row in holdout.features)


def test_feature_names_are_snake_case() -> None:
    names = dataset.feature_names()
    assert names[:3] == ["mean_radius", "mean_texture", "mean_perimeter"]
    assert "worst_concave_points" in names
    assert all(n == n.lower() and " " not in n for n in names)


def test_ranges_contain_the_training_data_and_never_go_negative() -> None:
    train = dataset.train_split()
    ranges = dataset.feature_ranges()
    for i, name in enumerate(dataset.feature_names()):
        low, high = ranges[name]
        assert 0 <= low <= train.features[:, i].min()
        assert high > train.features[:, i].max()


def test_sampler_is_deterministic_per_seed() -> None:
    first = dataset.sample_tasks(40, seed=3)
    assert first == dataset.sample_tasks(40, seed=3)
    other = dataset.sample_tasks(40, seed=4)
    assert [b["features"] for b, _ in first] != [b["features"] for b, _ in other]
    assert {b["task_id"] for b, _ in first}.isdisjoint(b["task_id"] for b, _ in other)


def test_sampled_tasks_are_valid_distinct_and_in_range() -> None:
    samples = dataset.sample_tasks(300, seed=11)
    ranges = dataset.feature_ranges()
    ids = set()
    for body, label in samples:
        task = TaskSubmitted.model_validate(body)
        assert task.task_type == "tumor_screening"
        assert list(task.features) == dataset.feature_names()
        for name, value in task.features.items():
            assert isinstance(value, float)
            assert ranges[name][0] <= value <= ranges[name][1]
        assert set(task.context) == {"patient_ref", "clinic"}
        assert label in dataset.LABELS
        ids.add(task.task_id)
    assert len(ids) == len(samples)
    assert len({tuple(b["features"].values()) for b, _ in samples}) == len(samples)
    assert len({b["priority"] for b, _ in samples}) > 10


def test_jitter_stays_within_two_percent_of_a_holdout_row() -> None:
    holdout = dataset.holdout_split()
    names = dataset.feature_names()
    for body, label in dataset.sample_tasks(20, seed=5):
        row = np.array([body["features"][n] for n in names])
        ratios = row / np.where(holdout.features == 0, 1, holdout.features)
        close = np.all((ratios > 0.979) & (ratios < 1.021) | (holdout.features == 0), axis=1)
        matches = np.flatnonzero(close)
        assert matches.size >= 1
        assert label in {str(holdout.labels[m]) for m in matches}


def test_critical_rate() -> None:
    assert not any(b["critical"] for b, _ in dataset.sample_tasks(200, 1, critical_rate=0.0))
    everything = dataset.sample_tasks(50, 1, critical_rate=1.0)
    assert all(b["critical"] and b["priority"] == 95 for b, _ in everything)
    some = sum(b["critical"] for b, _ in dataset.sample_tasks(2000, 1))
    assert 10 < some < 80


def test_fingerprint_changes_with_the_data() -> None:
    train = dataset.train_split()
    assert dataset.fingerprint(train) == dataset.fingerprint(dataset.train_split())
    changed = dataset.Split(train.features.copy(), train.labels)
    changed.features[0, 0] += 1e-9
    assert dataset.fingerprint(changed) != dataset.fingerprint(train)
