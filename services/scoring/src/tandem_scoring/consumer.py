"""The batch handler: submitted tasks in, scored events out (or a dead letter with the reason)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import EventData, ShadowScore, TaskScored, TaskSubmitted
from tandem_shared.kafka import Incoming, Outgoing, Rejected, Result
from tandem_shared.topics import Topics

from tandem_scoring.scorer import Rejection, Scorer, ScoreResult
from tandem_scoring.telemetry import ScoringMetrics
from tandem_scoring.versions import LiveModels

SOURCE = "tandem/scoring"


class ScoringHandler:
    """Scores each batch in a worker thread, so inference never blocks the event loop."""

    def __init__(self, live: LiveModels, topics: Topics, metrics: ScoringMetrics) -> None:
        self.live = live
        self.topics = topics
        self.metrics = metrics

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        tasks: list[TaskSubmitted] = []
        positions: list[int] = []
        results: list[Result] = [Rejected("not a submitted task")] * len(batch)
        for i, incoming in enumerate(batch):
            if isinstance(incoming.item.data, TaskSubmitted):
                tasks.append(incoming.item.data)
                positions.append(i)
        # The registries of this moment score the whole batch, even if a new version goes live.
        live = Scorer(self.live.registry, observe=self.metrics.observe_inference)
        shadow = Scorer(self.live.shadow) if self.live.shadow is not None else None
        scores, shadows = await asyncio.to_thread(_score, live, shadow, tasks)
        scored_at = utcnow()
        for i, task, score, candidate in zip(positions, tasks, scores, shadows, strict=True):
            if isinstance(score, Rejection):
                results[i] = Rejected(score.reason)
                continue
            self.metrics.observe_score(score)
            beside = _beside(score, candidate)
            if beside is not None:
                self.metrics.observe_shadow(score, beside)
            data = TaskScored(
                task=task,
                score=score.to_score().model_copy(update={"shadow": beside}),
                submitted_at=batch[i].item.time,
                scored_at=scored_at,
            )
            event = Event.derived(data, source=SOURCE, subject=task.task_id, stage="scored")
            results[i] = [Outgoing(self.topics.scored, event)]
        return results


def _score(
    live: Scorer, shadow: Scorer | None, tasks: list[TaskSubmitted]
) -> tuple[list[ScoreResult | Rejection], list[ScoreResult | Rejection | None]]:
    """Both scorers in one trip to the worker thread; the shadow sees the same tasks."""
    if not tasks:
        return [], []
    scores = live.predict(tasks)
    if shadow is None:
        return scores, [None] * len(tasks)
    return scores, list(shadow.predict(tasks))


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
