"""The scoring service's own metrics, registered on the runtime's registry."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tandem_shared.events import ShadowScore
from tandem_shared.telemetry import LATENCY_BUCKETS, children, guarded, observe_all

from tandem_scoring.drift import DriftChange, DriftWatch
from tandem_scoring.registry import LoadedModel
from tandem_scoring.scorer import ScoreResult

CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 0.999, 1.0)
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, *LATENCY_BUCKETS)


class ScoringMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.confidence = Histogram(
            "tandem_model_confidence",
            "Confidence (top probability) of each score.",
            ["task_type", "model", "version"],
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.quality_flags = Counter(
            "tandem_quality_flags",
            "Data-quality flags raised on scored tasks.",
            ["task_type", "code"],
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "tandem_model_inference_seconds",
            "Duration of one onnxruntime call (one per model per batch).",
            ["model", "version"],
            buckets=INFERENCE_BUCKETS,
            registry=registry,
        )
        self.shadow_scores = Counter(
            "tandem_shadow_scores",
            "Tasks a shadow version scored beside the live one, by agreement.",
            ["model", "version", "shadow_version", "agrees"],
            registry=registry,
        )
        self.shadow_confidence_delta = Histogram(
            "tandem_shadow_confidence_delta",
            "Shadow confidence minus live confidence, per task.",
            ["model", "version", "shadow_version"],
            buckets=(-0.5, -0.2, -0.1, -0.05, -0.01, 0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=registry,
        )
        self.model_refused = Counter(
            "tandem_model_refused",
            "Model versions a control change asked for that failed to load (the old one stayed).",
            ["model"],
            registry=registry,
        )
        self.drift_psi = Gauge(
            "tandem_drift_psi",
            "Population stability index of a feature (or the confidence) over the recent window.",
            ["model", "version", "feature"],
            registry=registry,
        )
        self.drift_alarms = Counter(
            "tandem_drift_changes",
            "Drift alarms raised and cleared.",
            ["model", "version", "feature", "drifting"],
            registry=registry,
        )
        self._drift_psi = children(self.drift_psi)
        self._confidence = children(self.confidence)
        self._quality_flags = children(self.quality_flags)

    def observe_inference(self, model: LoadedModel, rows: int, seconds: float) -> None:
        with guarded("inference metric"):
            self.inference_seconds.labels(model.manifest.name, model.manifest.version).observe(
                seconds
            )

    def observe_scores(self, results: Sequence[ScoreResult]) -> None:
        with guarded("score metrics"):
            confidences: dict[tuple[str, str, str], list[float]] = {}
            for result in results:
                model = result.model
                key = (result.task_type, model.name, model.version)
                confidences.setdefault(key, []).append(result.confidence)
                for flag in result.quality_flags:
                    self._quality_flags(result.task_type, flag.code).inc()
            for key, values in confidences.items():
                observe_all(self._confidence(*key), values)

    def observe_shadow(self, live: ScoreResult, shadow: ShadowScore) -> None:
        with guarded("shadow metrics"):
            labels = (live.model.name, live.model.version, shadow.model.version)
            self.shadow_scores.labels(*labels, str(shadow.agrees).lower()).inc()
            self.shadow_confidence_delta.labels(*labels).observe(shadow.confidence_delta)

    def observe_drift(self, watch: DriftWatch, changes: list[DriftChange]) -> None:
        with guarded("drift metrics"):
            for monitor in watch.monitors.values():
                for feature, value in monitor.current().items():
                    self._drift_psi(monitor.model, monitor.version, feature).set(value)
            for c in changes:
                self.drift_alarms.labels(
                    c.model, c.version, c.feature, str(c.drifting).lower()
                ).inc()
