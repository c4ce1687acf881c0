"""Drift of a model's inputs and confidence: population stability index against the manifest.

Pure: no Kafka, no HTTP, no metrics library, no clock. The API::

    psi(expected_shares, actual_counts, epsilon=1e-4) -> float

    monitor = DriftMonitor(manifest, window=1000, threshold=0.2, min_count=200)
    changes = monitor.observe(rows, confidences)  # once per scored batch of this model version
    monitor.current()                             # {feature: psi}, for a gauge per feature

    drift_control_event(change, service="scoring", at=now, replica=name)  # to publish

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

The control event has ``kind="drift"`` and the key ``drift/MODEL/VERSION/FEATURE/REPLICA``: each
replica's vote (``tandem_shared.drift_votes``), beside the model states (``kind="model"``, key
``model/MODEL``) that scoring follows. ``DriftWatch.inherit`` takes a restarted replica's alarms
back; ``DriftWatch.alarms`` lists those to repeat while they last.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from tandem_shared.drift_votes import DRIFT, vote_key
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
    psi: float | None  # None: an alarm taken back at a restart, not judged again yet
    drifting: bool


def _psi_rows(
    shares: NDArray[np.float64], counts: NDArray[np.int64], epsilon: float
) -> NDArray[np.float64]:
    """``psi`` of each row of ``counts`` against the same row of ``shares``, in one pass. A bin
    a row does not have (padding: share 0, count 0) adds ``(eps - eps) * ln(1) = 0``."""
    totals = counts.sum(axis=1, keepdims=True)
    e = np.maximum(shares, epsilon)
    a = np.maximum(counts / np.maximum(totals, 1), epsilon)
    out: NDArray[np.float64] = np.sum((a - e) * np.log(a / e), axis=1)
    return out


class _Windows:
    """For each of its features, the bin indices of the last ``size`` values, with their
    counts kept up to date: one ring per feature, all in one matrix, so a batch is binned,
    counted and judged for every feature in a few numpy calls, not a few per feature (per
    feature, that was the scoring service's largest cost after decoding)."""

    def __init__(self, references: Mapping[str, ReferenceDistribution], size: int) -> None:
        self.names = list(references)
        self.row = {name: i for i, name in enumerate(self.names)}
        edges = max((len(r.bin_edges) for r in references.values()), default=0)
        # Padding: an edge at +inf no finite value reaches; a bin of share 0 that stays empty.
        self.edges = np.full((len(self.names), edges), np.inf)
        self.shares = np.zeros((len(self.names), edges + 1))
        for i, r in enumerate(references.values()):
            self.edges[i, : len(r.bin_edges)] = r.bin_edges
            self.shares[i, : len(r.bin_fractions)] = r.bin_fractions
        self.bins = edges + 1
        self.ring = np.zeros((len(self.names), size), dtype=np.int64)
        self.counts = np.zeros((len(self.names), self.bins), dtype=np.int64)
        self.filled = np.zeros(len(self.names), dtype=np.int64)
        self.head = np.zeros(len(self.names), dtype=np.int64)  # where the next value goes
        self.drifting = np.zeros(len(self.names), dtype=np.bool_)

    def push(self, values: Mapping[str, NDArray[np.float64]]) -> list[int]:
        """Add each feature's new values (finite); return the rows that got any. Features in
        the same state with as many new values (all of them, in the common case) move as one."""
        groups: dict[tuple[int, int, int], list[int]] = {}
        for name, column in values.items():
            i = self.row[name]
            if len(column):
                groups.setdefault((len(column), self.head[i], self.filled[i]), []).append(i)
        for (_, head, filled), rows in groups.items():
            block = np.stack([values[self.names[i]] for i in rows])
            self._push(np.asarray(rows), block, head, filled)
        return sorted(i for rows in groups.values() for i in rows)

    def _push(
        self, rows: NDArray[np.intp], block: NDArray[np.float64], head: int, filled: int
    ) -> None:
        # A value equal to an edge falls in the bin above it, as the manifest's bins were made:
        # its bin is the number of edges at or below it.
        bins = (self.edges[rows, None, :] <= block[:, :, None]).sum(axis=2)
        size = self.ring.shape[1]
        if bins.shape[1] >= size:  # only the newest ``size`` values stay
            self.ring[rows] = bins[:, -size:]
            self.counts[rows] = self._count(self.ring[rows])
            self.head[rows], self.filled[rows] = 0, size
            return
        slots = (head + np.arange(bins.shape[1])) % size
        # Until the ring is full the head is at ``filled``: slots below it hold a value.
        evicted = slots if filled == size else slots[slots < filled]
        self.counts[rows] -= self._count(self.ring[np.ix_(rows, evicted)])
        self.ring[np.ix_(rows, slots)] = bins
        self.counts[rows] += self._count(bins)
        self.head[rows] = (head + bins.shape[1]) % size
        self.filled[rows] = min(filled + bins.shape[1], size)

    def _count(self, bins: NDArray[np.int64]) -> NDArray[np.int64]:
        """Each row's bin counts: one bincount, each row's bins offset into a range of its own."""
        offsets = np.arange(len(bins))[:, None] * self.bins
        flat = np.bincount((bins + offsets).ravel(), minlength=len(bins) * self.bins)
        return flat.reshape(len(bins), self.bins)

    def psi(self, rows: NDArray[np.intp] | list[int], epsilon: float) -> NDArray[np.float64]:
        return _psi_rows(self.shares[rows], self.counts[rows], epsilon)


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
        self._specs: dict[str, FeatureSpec] = {
            f.name: f for f in manifest.ordered_features if f.reference is not None
        }
        references = {name: spec.reference for name, spec in self._specs.items()}
        # The numeric features, read from clean rows as one matrix (see _values).
        self._numeric = [n for n, spec in self._specs.items() if isinstance(spec, NumericFeature)]
        self._column_of = {name: j for j, name in enumerate(self._numeric)}
        self._confidence = False
        if manifest.confidence_reference is not None:
            if CONFIDENCE in manifest.feature_names:
                log.warning(
                    "model %s/%s has a feature named %r: its confidence is not watched for drift",
                    self.model,
                    self.version,
                    CONFIDENCE,
                )
            else:
                self._confidence = True
                references[CONFIDENCE] = manifest.confidence_reference
        self._windows = _Windows(
            {name: r for name, r in references.items() if r is not None}, window
        )

    @property
    def watched(self) -> list[str]:
        """The features (and ``confidence``) this monitor keeps a window for."""
        return list(self._windows.names)

    def observe(
        self,
        rows: Sequence[Mapping[str, FeatureValue]],
        confidences: Sequence[float],
        read: PlainNumbers | None = None,
    ) -> list[DriftChange]:
        """Add one batch; return the features whose drift state it changed. ``read``: the
        plain numbers the scorer read from the same rows, if it did."""
        values = self._values(rows, read)
        if self._confidence:
            values[CONFIDENCE] = np.asarray(confidences, dtype=np.float64)
            values[CONFIDENCE] = values[CONFIDENCE][np.isfinite(values[CONFIDENCE])]
        windows = self._windows
        touched = np.asarray(windows.push(values), dtype=np.intp)
        judged = touched[windows.filled[touched] >= self.min_count]
        if not len(judged):
            return []
        value = windows.psi(judged, self.epsilon)
        drifting = windows.drifting[judged]
        crossed = np.where(
            drifting, value < self.recovery * self.threshold, value >= self.threshold
        )
        changes: list[DriftChange] = []
        for i, psi_value in zip(judged[crossed], value[crossed], strict=True):
            windows.drifting[i] = not windows.drifting[i]
            name = windows.names[i]
            changes.append(
                DriftChange(
                    self.model, self.version, name, float(psi_value), bool(windows.drifting[i])
                )
            )
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
        windows = self._windows
        judged = np.flatnonzero(windows.filled >= self.min_count)
        value = windows.psi(judged, self.epsilon)
        return {windows.names[i]: float(v) for i, v in zip(judged, value, strict=True)}

    def drifting(self) -> list[str]:
        """The features in alarm now."""
        return [self._windows.names[i] for i in np.flatnonzero(self._windows.drifting)]

    def inherit(self, feature: str) -> None:
        """Hold ``feature`` in alarm, as this replica said before a restart: it is reported
        recovered once a full window says so, never forgotten for an empty one."""
        row = self._windows.row.get(feature)
        if row is not None:
            self._windows.drifting[row] = True

    def size(self, feature: str) -> int:
        """How many values the feature's window holds (at most ``window``)."""
        return int(self._windows.filled[self._windows.row[feature]])


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


def drift_control_event(
    change: DriftChange, service: str, at: datetime, replica: str
) -> Event[ControlChanged]:
    """The control record of a replica's drift vote, keyed
    ``drift/MODEL/VERSION/FEATURE/REPLICA``; ``service`` names the writer (e.g. ``scoring``).
    The id derives from the key, the state and ``at``."""
    subject = vote_key(change.model, change.version, change.feature, replica)
    data = ControlChanged(
        kind=DRIFT,
        name=change.model,
        value={
            "feature": change.feature,
            "psi": change.psi,
            "drifting": change.drifting,
            "version": change.version,
            "replica": replica,
        },
        changed_by=f"tandem/{service}",
        changed_at=at,
    )
    state = "alarm" if change.drifting else "recovered"
    return Event(
        event_id(subject, f"{state}@{at.isoformat()}"), f"tandem/{service}", subject, data, at
    )


class DriftWatch:
    """A monitor per model version in use, fed with each scored batch (one at a time: the
    consumer's), and read for the alarms to repeat from another task: a lock keeps the two
    apart."""

    def __init__(self, window: int, threshold: float, min_count: int) -> None:
        self.window = window
        self.threshold = threshold
        self.min_count = min_count
        self.monitors: dict[str, DriftMonitor] = {}
        # MODEL/VERSION -> {feature: psi} this replica held in alarm before a restart, for
        # the monitors not made yet.
        self._inherited: dict[str, dict[str, float | None]] = {}
        self._lock = threading.Lock()

    def inherit(self, model: str, version: str, feature: str, psi: float | None) -> None:
        """An alarm this replica voted for before it restarted (read from the control topic)."""
        key = f"{model}/{version}"
        with self._lock:
            monitor = self.monitors.get(key)
            if monitor is not None:
                monitor.inherit(feature)
            else:
                self._inherited.setdefault(key, {})[feature] = psi

    def alarms(self) -> list[DriftChange]:
        """Every alarm this replica holds now, to say again (its votes run out otherwise)."""
        with self._lock:
            out: list[DriftChange] = []
            for m in self.monitors.values():
                alarmed = m.drifting()
                psi = m.current() if alarmed else {}
                out += [DriftChange(m.model, m.version, f, psi.get(f), True) for f in alarmed]
            for key, features in self._inherited.items():
                model, _, version = key.rpartition("/")
                out += [DriftChange(model, version, f, psi, True) for f, psi in features.items()]
        return out

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
        with self._lock:
            for manifest, model_rows, model_confidences, model_read in zip(
                models, rows, confidences, read, strict=True
            ):
                key = f"{manifest.name}/{manifest.version}"
                monitor = self.monitors.get(key)
                if monitor is None:
                    monitor = self.monitors[key] = DriftMonitor(
                        manifest, self.window, self.threshold, self.min_count
                    )
                    for feature in self._inherited.pop(key, {}):
                        monitor.inherit(feature)
                changes += monitor.observe(model_rows, model_confidences, model_read)
        return changes
