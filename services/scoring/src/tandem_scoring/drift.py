"""Drift of a model's inputs and confidence: population stability index against the manifest.

Pure: no Kafka, no HTTP, no metrics library, no clock. The API::

    psi(expected_shares, actual_counts, epsilon=1e-4) -> float

    monitor = DriftMonitor(manifest, window=1000, threshold=0.2, min_count=200)
    changes = monitor.observe(rows, confidences)  # once per scored batch of this model version
    monitor.current()                             # {feature: psi}, for a gauge per feature

    drift_control_event(change, service="scoring", at=now)  # Event[ControlChanged] to publish

``rows`` are the tasks' feature dicts as received (``TaskSubmitted.features``), ``confidences``
the confidences the model gave them (either may be empty). One monitor watches one model
version: every feature that has a reference distribution, and the model's confidence under the
name ``confidence`` (``CONFIDENCE``) when the manifest has ``confidence_reference``. Each keeps
the bin indices of its last ``window`` values in a ring buffer with running bin counts, so
memory is O(window) per feature and an observation costs O(batch).

What is counted: a numeric feature's int or float values (booleans as 0 and 1, out-of-range
values too: they are drift), never missing, non-numeric or non-finite ones; a boolean
feature's true/false (or 0/1); a categorical feature's known categories. Values the scorer
flags as missing or of the wrong type are data-quality problems, not distribution shift.

``observe`` returns a ``DriftChange`` when a feature's PSI reaches ``threshold`` (an alarm), and
again when it falls below ``recovery * threshold`` (recovered); the gap keeps a PSI hovering at
the threshold from flapping. Nothing is judged, nor reported by ``current``, before a feature
has ``min_count`` values in its window. Not thread-safe: observe from one thread at a time.

The control event has ``kind="drift"`` and the key ``drift/MODEL/FEATURE``, beside the model
states (``kind="model"``, key ``model/MODEL``) that scoring follows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from tandem_shared.envelope import Event, event_id
from tandem_shared.events import ControlChanged, FeatureValue

from tandem_scoring.columns import PlainNumbers, plain_numbers
from tandem_scoring.manifest import (
    BooleanFeature,
    CategoricalFeature,
    ModelManifest,
    NumericFeature,
    ReferenceDistribution,
)

log = logging.getLogger(__name__)

FeatureSpec = NumericFeature | BooleanFeature | CategoricalFeature

CONFIDENCE = "confidence"
DRIFT = "drift"


def psi(
    expected_shares: Sequence[float] | NDArray[np.float64],
    actual_counts: Sequence[int] | NDArray[np.int64],
    epsilon: float = 1e-4,
) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` of the observed bin counts
    against the reference shares; shares below ``epsilon`` count as ``epsilon``, so an empty
    bin weighs heavily but finitely."""
    expected = np.asarray(expected_shares, dtype=np.float64)
    counts = np.asarray(actual_counts, dtype=np.float64)
    if expected.shape != counts.shape or expected.ndim != 1:
        raise ValueError(f"{expected.size} reference shares for {counts.size} bins")
    total = counts.sum()
    if total <= 0:
        raise ValueError("no values observed: PSI is undefined")
    e = np.maximum(expected, epsilon)
    a = np.maximum(counts / total, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftChange:
    """A feature (or ``confidence``) of a model version started or stopped drifting."""

    model: str
    version: str
    feature: str
    psi: float
    drifting: bool


class _Window:
    """The bin indices of the last ``size`` values, with their counts kept up to date."""

    def __init__(self, reference: ReferenceDistribution, size: int) -> None:
        self.edges = np.asarray(reference.bin_edges, dtype=np.float64)
        self.shares = np.asarray(reference.bin_fractions, dtype=np.float64)
        self.ring = np.zeros(size, dtype=np.int32)
        self.counts = np.zeros(len(self.shares), dtype=np.int64)
        self.filled = 0
        self.head = 0  # where the next value goes
        self.drifting = False

    def push(self, values: NDArray[np.float64]) -> None:
        # A value equal to an edge falls in the bin above it, as the manifest's bins were made.
        bins = np.searchsorted(self.edges, values, side="right").astype(np.int32)
        size = len(self.ring)
        if len(bins) >= size:  # only the newest ``size`` values stay
            self.ring[:] = bins[-size:]
            self.counts[:] = np.bincount(self.ring, minlength=len(self.counts))
            self.head, self.filled = 0, size
            return
        slots = (self.head + np.arange(len(bins))) % size
        # Until the ring is full the head is at ``filled``: slots below it hold a value.
        evicted = slots if self.filled == size else slots[slots < self.filled]
        self.counts -= np.bincount(self.ring[evicted], minlength=len(self.counts))
        self.ring[slots] = bins
        self.counts += np.bincount(bins, minlength=len(self.counts))
        self.head = (self.head + len(bins)) % size
        self.filled = min(self.filled + len(bins), size)

    def psi(self, epsilon: float) -> float:
        return psi(self.shares, self.counts, epsilon)


class DriftMonitor:
    """PSI over a sliding window for every feature of one model version that has a reference,
    and for the model's confidence; see the module docstring."""

    def __init__(
        self,
        manifest: ModelManifest,
        window: int = 1000,
        threshold: float = 0.2,
        min_count: int = 200,
        recovery: float = 0.8,
        epsilon: float = 1e-4,
    ) -> None:
        if window < 1 or not 1 <= min_count <= window:
            raise ValueError("window must be at least 1 and min_count between 1 and window")
        if threshold <= 0 or not 0 < recovery <= 1:
            raise ValueError("threshold must be positive and recovery in (0, 1]")
        self.model = manifest.name
        self.version = manifest.version
        self.threshold = threshold
        self.min_count = min_count
        self.recovery = recovery
        self.epsilon = epsilon
        self._specs: dict[str, FeatureSpec] = {}
        self._windows: dict[str, _Window] = {}
        for f in manifest.ordered_features:
            if f.reference is not None:
                self._specs[f.name] = f
                self._windows[f.name] = _Window(f.reference, window)
        # The numeric features, read from clean rows as one matrix (see _values).
        self._numeric = [n for n, spec in self._specs.items() if isinstance(spec, NumericFeature)]
        self._column_of = {name: j for j, name in enumerate(self._numeric)}
        self._confidence: _Window | None = None
        if manifest.confidence_reference is not None:
            if CONFIDENCE in manifest.feature_names:
                log.warning(
                    "model %s/%s has a feature named %r: its confidence is not watched for drift",
                    self.model,
                    self.version,
                    CONFIDENCE,
                )
            else:
                self._confidence = _Window(manifest.confidence_reference, window)
                self._windows[CONFIDENCE] = self._confidence

    @property
    def watched(self) -> list[str]:
        """The features (and ``confidence``) this monitor keeps a window for."""
        return list(self._windows)

    def observe(
        self,
        rows: Sequence[Mapping[str, FeatureValue]],
        confidences: Sequence[float],
        read: PlainNumbers | None = None,
    ) -> list[DriftChange]:
        """Add one batch; return the features whose drift state it changed. ``read``: the
        plain numbers the scorer read from the same rows, if it did."""
        touched: list[str] = []
        for name, values in self._values(rows, read).items():
            if len(values):
                self._windows[name].push(values)
                touched.append(name)
        if self._confidence is not None:
            finite = [c for c in confidences if math.isfinite(c)]
            if finite:
                self._confidence.push(np.asarray(finite, dtype=np.float64))
                touched.append(CONFIDENCE)
        changes: list[DriftChange] = []
        for name in touched:
            window = self._windows[name]
            if window.filled < self.min_count:
                continue
            value = window.psi(self.epsilon)
            if window.drifting:
                crossed = value < self.recovery * self.threshold
            else:
                crossed = value >= self.threshold
            if crossed:
                window.drifting = not window.drifting
                changes.append(DriftChange(self.model, self.version, name, value, window.drifting))
        return changes

    def _values(
        self, rows: Sequence[Mapping[str, FeatureValue]], read: PlainNumbers | None
    ) -> dict[str, NDArray[np.float64]]:
        """Each watched feature's countable values in the batch: the numeric features of clean
        rows straight from one matrix, everything else value by value."""
        if read is not None and read.covers(self._numeric, len(rows)):
            plain = read
            column_of = {name: j for j, name in enumerate(read.names) if name in self._column_of}
        else:
            plain, column_of = plain_numbers(self._numeric, rows), self._column_of
        block, clean = plain.matrix, plain.clean
        rest = [row for row, ok in zip(rows, clean, strict=True) if not ok]
        out: dict[str, NDArray[np.float64]] = {}
        for name, spec in self._specs.items():
            j = column_of.get(name)
            column = block[clean, j] if j is not None else np.empty(0, dtype=np.float64)
            scan = rest if j is not None else rows
            others = [v for row in scan if (v := _encode(spec, row.get(name))) is not None]
            out[name] = np.concatenate([column, np.asarray(others, dtype=np.float64)])
        return out

    def current(self) -> dict[str, float]:
        """PSI of every watched feature that has ``min_count`` values in its window."""
        return {
            name: window.psi(self.epsilon)
            for name, window in self._windows.items()
            if window.filled >= self.min_count
        }

    def drifting(self) -> list[str]:
        """The features in alarm now."""
        return [name for name, window in self._windows.items() if window.drifting]

    def size(self, feature: str) -> int:
        """How many values the feature's window holds (at most ``window``)."""
        return self._windows[feature].filled


def _encode(spec: FeatureSpec, raw: FeatureValue) -> float | None:
    """The value a feature's reference bins count, or None for what the bins do not hold."""
    if raw is None:
        return None
    if isinstance(spec, CategoricalFeature):
        if isinstance(raw, str) and raw in spec.categories:
            return float(spec.categories.index(raw))
        return None
    if isinstance(spec, BooleanFeature):
        if isinstance(raw, int | float) and raw in (0, 1):  # True and False included
            return float(raw)
        return None
    if isinstance(raw, int | float):  # booleans are ints: they count as 0 and 1
        try:
            value = float(raw)
        except OverflowError:
            return None
        return value if math.isfinite(value) else None
    return None


def drift_control_event(change: DriftChange, service: str, at: datetime) -> Event[ControlChanged]:
    """The control record of a drift change, keyed ``drift/MODEL/FEATURE``; ``service`` names
    the writer (e.g. ``scoring``). The id derives from the key, the state and ``at``."""
    subject = f"{DRIFT}/{change.model}/{change.feature}"
    data = ControlChanged(
        kind="drift",
        name=change.model,
        value={
            "feature": change.feature,
            "psi": change.psi,
            "drifting": change.drifting,
            "version": change.version,
        },
        changed_by=f"tandem/{service}",
        changed_at=at,
    )
    state = "alarm" if change.drifting else "recovered"
    return Event(
        event_id(subject, f"{state}@{at.isoformat()}"), f"tandem/{service}", subject, data, at
    )


class DriftWatch:
    """A monitor per model version in use, fed with each scored batch. Not thread-safe: the
    consumer handles one batch at a time."""

    def __init__(self, window: int, threshold: float, min_count: int) -> None:
        self.window = window
        self.threshold = threshold
        self.min_count = min_count
        self.monitors: dict[str, DriftMonitor] = {}

    def observe(
        self,
        models: Sequence[ModelManifest],
        rows: Sequence[Sequence[Mapping[str, FeatureValue]]],
        confidences: Sequence[Sequence[float]],
        read: Sequence[PlainNumbers | None] | None = None,
    ) -> list[DriftChange]:
        """One call per batch: for each model that scored in it, its rows and confidences (and
        the plain numbers the scorer read from those rows, if it did)."""
        changes: list[DriftChange] = []
        read = read if read is not None else [None] * len(models)
        for manifest, model_rows, model_confidences, model_read in zip(
            models, rows, confidences, read, strict=True
        ):
            key = f"{manifest.name}/{manifest.version}"
            monitor = self.monitors.get(key)
            if monitor is None:
                monitor = self.monitors[key] = DriftMonitor(
                    manifest, self.window, self.threshold, self.min_count
                )
            changes += monitor.observe(model_rows, model_confidences, model_read)
        return changes
