"""The batch handler: submitted tasks in, scored events out (or a dead letter with the reason)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from tandem_shared.control_signing import ControlSigner, signed
from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import (
    EventData,
    FeatureValue,
    ShadowScore,
    TaskScored,
    TaskSubmitted,
)
from tandem_shared.kafka import Incoming, Outgoing, Rejected, Result
from tandem_shared.topics import Topics

from tandem_scoring.columns import PlainNumbers
from tandem_scoring.drift import DriftChange, DriftWatch, drift_control_event
from tandem_scoring.manifest import ModelManifest
from tandem_scoring.registry import ModelRegistry
from tandem_scoring.scorer import Rejection, Scorer, ScoreResult
from tandem_scoring.telemetry import ScoringMetrics
from tandem_scoring.versions import LiveModels

SOURCE = "tandem/scoring"


class ScoringHandler:
    """Scores each batch: a heavy one in a worker thread, so it never blocks the event loop."""

    def __init__(
        self,
        live: LiveModels,
        topics: Topics,
        metrics: ScoringMetrics,
        drift: DriftWatch | None = None,
        thread_min_batch: int = 256,
        signer: ControlSigner | None = None,
        replica: str = "scoring",
    ) -> None:
        """``replica``: this process's name among the service's, in its drift votes."""
        self.live = live
        self.topics = topics
        self.metrics = metrics
        self.drift = drift or DriftWatch(window=1000, threshold=0.2, min_count=1000)
        self.thread_min_batch = thread_min_batch
        self.signer = signer  # drift alarms are control changes: signed like the others
        self.replica = replica

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        tasks: list[TaskSubmitted] = []
        positions: list[int] = []
        results: list[Result] = [Rejected("not a submitted task")] * len(batch)
        for i, incoming in enumerate(batch):
            if isinstance(incoming.item.data, TaskSubmitted):
                tasks.append(incoming.item.data)
                positions.append(i)
        # The registries of this moment score the whole batch, even if a new version goes live.
        registry = self.live.registry
        live = Scorer(registry, observe=self.metrics.observe_inference)
        shadow = Scorer(self.live.shadow) if self.live.shadow is not None else None
        work = (live, shadow, tasks, self.drift, registry)
        if len(tasks) >= self.thread_min_batch:
            scores, shadows, changes = await asyncio.to_thread(_score, *work)
        else:
            scores, shadows, changes = _score(*work)
        self.metrics.observe_drift(self.drift, changes)
        scored_at = utcnow()
        self.metrics.observe_scores([s for s in scores if isinstance(s, ScoreResult)])
        last: int | None = None
        for i, task, score, candidate in zip(positions, tasks, scores, shadows, strict=True):
            if isinstance(score, Rejection):
                results[i] = Rejected(score.reason)
                continue
            beside = _beside(score, candidate)
            if beside is not None:
                self.metrics.observe_shadow(score, beside)
            data = TaskScored(
                task=task,
                score=score.to_score(shadow=beside),
                submitted_at=batch[i].item.time,
                scored_at=scored_at,
            )
            event = Event.derived(data, source=SOURCE, subject=task.task_id, stage="scored")
            results[i] = [Outgoing(self.topics.scored, event)]
            last = i
        if changes and last is not None:
            # Drift is a property of the batch: its control events ride with the batch's last
            # scored record, so they too are acknowledged before the offsets are committed.
            alarms = [
                Outgoing(
                    self.topics.control,
                    signed(drift_control_event(c, "scoring", scored_at, self.replica), self.signer),
                )
                for c in changes
            ]
            scored = results[last]
            assert not isinstance(scored, Rejected)
            results[last] = [*scored, *alarms]
        return results


def _score(
    live: Scorer,
    shadow: Scorer | None,
    tasks: list[TaskSubmitted],
    drift: DriftWatch,
    registry: ModelRegistry,
) -> tuple[list[ScoreResult | Rejection], list[ScoreResult | Rejection | None], list[DriftChange]]:
    """All the batch's CPU work in one trip to the worker thread: the live scores, the shadow's
    on the same tasks, and the drift they show."""
    if not tasks:
        return [], [], []
    scores = live.predict(tasks)
    shadows: list[ScoreResult | Rejection | None] = (
        [None] * len(tasks) if shadow is None else list(shadow.predict(tasks))
    )
    return scores, shadows, _watch(drift, registry, tasks, scores, live.read)


def _watch(
    watch: DriftWatch,
    registry: ModelRegistry,
    tasks: list[TaskSubmitted],
    scores: list[ScoreResult | Rejection],
    read: Mapping[str, PlainNumbers],
) -> list[DriftChange]:
    """Feed each model's scored rows and confidences to its drift monitor, with the numbers
    the scorer read from the same rows (grouped by model in the same order)."""
    by_model: dict[str, tuple[ModelManifest, list[Mapping[str, FeatureValue]], list[float]]] = {}
    for task, score in zip(tasks, scores, strict=True):
        model = registry.get(task.task_type)
        if model is None or not isinstance(score, ScoreResult):
            continue
        entry = by_model.setdefault(model.key, (model.manifest, [], []))
        entry[1].append(task.features)
        entry[2].append(score.confidence)
    keys, groups = list(by_model), list(by_model.values())
    return watch.observe(
        [g[0] for g in groups],
        [g[1] for g in groups],
        [g[2] for g in groups],
        [read.get(key) for key in keys],
    )


def _beside(live: ScoreResult, candidate: ScoreResult | Rejection | None) -> ShadowScore | None:
    if not isinstance(candidate, ScoreResult):
        return None  # no shadow serves this task type
    return ShadowScore(
        model=candidate.model,
        prediction=candidate.prediction,
        probabilities=candidate.probabilities,
        confidence=candidate.confidence,
        agrees=candidate.prediction == live.prediction,
        confidence_delta=candidate.confidence - live.confidence,
    )
