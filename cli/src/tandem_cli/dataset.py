"""The reference data set: scikit-learn's bundled breast cancer data as ``tumor_screening`` tasks.

The data ships inside scikit-learn (no download). One fixed, stratified train/holdout split is
shared by the training script (which fits the reference model on the train rows) and by the
sampler (which draws demo tasks from the holdout rows, so the model is scored on unseen data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

TASK_TYPE = "tumor_screening"
# scikit-learn's target: 0 = malignant, 1 = benign.
LABELS: tuple[str, str] = ("malignant", "benign")
HOLDOUT_FRACTION = 0.3
SPLIT_SEED = 7
# Valid ranges are the training range widened by this share of its span on each side: wide
# enough that every holdout row (unseen, real data) is in range, narrow enough to catch slips.
RANGE_MARGIN = 0.25
JITTER = 0.02
CLINICS = ("north", "south", "east", "west", "central")


@dataclass(frozen=True)
class Split:
    """Rows of one side of the split: features in ``feature_names()`` order, string labels."""

    features: NDArray[np.float64]
    labels: NDArray[np.str_]

    def __len__(self) -> int:
        return len(self.labels)


def _snake(name: str) -> str:
    return "_".join(name.lower().split())


@cache
def _bundle() -> tuple[tuple[str, ...], NDArray[np.float64], NDArray[np.str_]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = tuple(_snake(str(n)) for n in data.feature_names)
    features = np.ascontiguousarray(data.data, dtype=np.float64)
    labels = np.asarray(LABELS)[data.target]
    return names, features, labels


def feature_names() -> list[str]:
    return list(_bundle()[0])


@cache
def _split() -> tuple[Split, Split]:
    from sklearn.model_selection import train_test_split

    _, features, labels = _bundle()
    x_train, x_hold, y_train, y_hold = train_test_split(
        features,
        labels,
        test_size=HOLDOUT_FRACTION,
        stratify=labels,
        random_state=SPLIT_SEED,
    )
    return _frozen(x_train, y_train), _frozen(x_hold, y_hold)


def _frozen(features: NDArray[np.float64], labels: NDArray[np.str_]) -> Split:
    """A split whose arrays are read-only: every caller shares the one cached copy."""
    split = Split(np.ascontiguousarray(features), np.asarray(labels))
    split.features.flags.writeable = False
    split.labels.flags.writeable = False
    return split


def train_split() -> Split:
    return _split()[0]


def holdout_split() -> Split:
    return _split()[1]


def fingerprint(split: Split) -> str:
    """sha256 of the split's feature bytes (little-endian float64, row-major) and its labels."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(split.features, dtype="<f8").tobytes())
    digest.update("\n".join(str(label) for label in split.labels).encode())
    return digest.hexdigest()


def _round(value: float) -> float:
    return float(f"{value:.6g}")


@cache
def feature_ranges() -> dict[str, tuple[float, float]]:
    """The valid range of each feature: the training range widened a bit, never below 0 for a
    measure that is never negative."""
    train = train_split()
    ranges: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(feature_names()):
        column = train.features[:, i]
        low, high = float(column.min()), float(column.max())
        span = high - low or abs(high) or 1.0
        lower = low - RANGE_MARGIN * span
        if low >= 0:
            lower = max(lower, 0.0)
        ranges[name] = (_round(lower), _round(high + RANGE_MARGIN * span))
    return ranges


def sample_tasks(
    count: int, seed: int, critical_rate: float = 0.02
) -> list[tuple[dict[str, Any], str]]:
    """``count`` task bodies (valid ``tandem.task.submitted.v1`` data) with their true labels.

    Rows come from the holdout split, drawn with replacement, each feature jittered by up to
    ±2% and kept inside its valid range so the tasks are distinct yet clean. The same seed
    always gives the same tasks (and the same task ids).
    """
    if count < 0:
        raise ValueError("count must not be negative")
    if not 0.0 <= critical_rate <= 1.0:
        raise ValueError("critical_rate must be between 0 and 1")
    rng = np.random.default_rng(seed)
    holdout = holdout_split()
    names = feature_names()
    ranges = feature_ranges()
    lows = np.array([ranges[n][0] for n in names])
    highs = np.array([ranges[n][1] for n in names])
    rows = rng.integers(0, len(holdout), size=count)
    noise = rng.uniform(1.0 - JITTER, 1.0 + JITTER, size=(count, len(names)))
    values = np.clip(holdout.features[rows] * noise, lows, highs)
    critical = rng.random(count) < critical_rate
    priorities = rng.integers(10, 91, size=count)
    patients = rng.integers(10_000, 100_000, size=count)
    clinics = rng.integers(0, len(CLINICS), size=count)
    out: list[tuple[dict[str, Any], str]] = []
    for n in range(count):
        features = {
            name: min(max(_round(float(v)), lo), hi)
            for name, v, lo, hi in zip(names, values[n], lows, highs, strict=True)
        }
        body = {
            "task_id": f"ts-{seed}-{n:06d}",
            "task_type": TASK_TYPE,
            "features": {k: float(v) for k, v in features.items()},
            "context": {
                "patient_ref": f"P-{int(patients[n])}",
                "clinic": CLINICS[int(clinics[n])],
            },
            "priority": 95 if critical[n] else int(priorities[n]),
            "critical": bool(critical[n]),
        }
        out.append((body, str(holdout.labels[rows[n]])))
    return out
