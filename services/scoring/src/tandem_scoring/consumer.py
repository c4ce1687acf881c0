"""The batch handler: submitted tasks in, scored events out (or a dead letter with the reason)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import EventData, TaskScored, TaskSubmitted
from tandem_shared.kafka import Incoming, Outgoing, Rejected, Result
from tandem_shared.topics import Topics

from tandem_scoring.scorer import Rejection, Scorer
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
        # The registry of this moment scores the whole batch, even if a new version goes live.
        scorer = Scorer(self.live.registry, observe=self.metrics.observe_inference)
        scores = await asyncio.to_thread(scorer.predict, tasks) if tasks else []
        scored_at = utcnow()
        for i, task, score in zip(positions, tasks, scores, strict=True):
            if isinstance(score, Rejection):
                results[i] = Rejected(score.reason)
                continue
            self.metrics.observe_score(score)
            data = TaskScored(
                task=task,
                score=score.to_score(),
                submitted_at=batch[i].item.time,
                scored_at=scored_at,
            )
            event = Event.derived(data, source=SOURCE, subject=task.task_id, stage="scored")
            results[i] = [Outgoing(self.topics.scored, event)]
        return results
