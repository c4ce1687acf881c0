"""The batch handler without a broker: one result per record, in order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from tandem_cli import dataset
from tandem_scoring.consumer import ScoringHandler
from tandem_scoring.drift import DriftWatch
from tandem_scoring.registry import ModelRegistry
from tandem_scoring.telemetry import ScoringMetrics
from tandem_scoring.versions import LiveModels
from tandem_shared.envelope import Event, event_id
from tandem_shared.events import EventData, TaskScored, TaskSubmitted
from tandem_shared.kafka import Incoming, Outgoing, Rejected
from tandem_shared.topics import Topics

from tests.scoring.conftest import MODELS

SUBMITTED_AT = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)


def incoming(body: dict[str, Any], offset: int) -> Incoming[Event[EventData]]:
    task = TaskSubmitted.model_validate(body)
    event: Event[EventData] = Event("in-" + task.task_id, "test", task.task_id, task, SUBMITTED_AT)
    return Incoming(event, "t.tasks.submitted", 0, offset, task.task_id, [], 0, b"")


async def test_scores_and_rejects_in_order(registry: ModelRegistry) -> None:
    metrics_registry = CollectorRegistry()
    handler = ScoringHandler(
        LiveModels(registry, MODELS), Topics("t."), ScoringMetrics(metrics_registry)
    )
    bodies = [b for b, _ in dataset.sample_tasks(3, seed=8)]
    bodies.insert(1, {"task_id": "x-1", "task_type": "unknown", "features": {}})
    results = await handler([incoming(b, n) for n, b in enumerate(bodies)])
    assert len(results) == 4
    rejected = results[1]
    assert isinstance(rejected, Rejected)
    assert str(rejected) == "no model serves task type 'unknown'"
    for body, result in zip(bodies[:1] + bodies[2:], results[:1] + results[2:], strict=True):
        assert not isinstance(result, Rejected)
        [out] = result
        assert isinstance(out, Outgoing) and out.topic == "t.tasks.scored"
        assert out.event.id == event_id(body["task_id"], "scored")
        assert out.event.source == "tandem/scoring" and out.event.subject == body["task_id"]
        assert out.key == body["task_id"].encode()
        data = out.event.data
        assert isinstance(data, TaskScored)
        assert data.task == TaskSubmitted.model_validate(body)
        assert data.submitted_at == SUBMITTED_AT and data.scored_at > SUBMITTED_AT
    count = metrics_registry.get_sample_value(
        "tandem_model_confidence_count",
        {"task_type": "tumor_screening", "model": "tumor_screening", "version": "1"},
    )
    assert count == 3


async def test_replay_gives_the_same_ids(registry: ModelRegistry) -> None:
    handler = ScoringHandler(
        LiveModels(registry, MODELS), Topics("t."), ScoringMetrics(CollectorRegistry())
    )
    batch = [incoming(b, n) for n, (b, _) in enumerate(dataset.sample_tasks(5, seed=9))]
    first, second = await handler(batch), await handler(batch)
    ids = [[o.event.id for o in r] for r in first if not isinstance(r, Rejected)]
    assert ids == [[o.event.id for o in r] for r in second if not isinstance(r, Rejected)]


async def test_drift_alarms_ride_with_the_batch_as_control_events(registry: ModelRegistry) -> None:
    drift = DriftWatch(window=300, threshold=0.2, min_count=300)
    handler = ScoringHandler(
        LiveModels(registry, MODELS), Topics("t."), ScoringMetrics(CollectorRegistry()), drift
    )
    steady = [b for b, _ in dataset.sample_tasks(300, seed=21)]
    results = await handler([incoming(b, n) for n, b in enumerate(steady)])
    assert all(len(r) == 1 for r in results if not isinstance(r, Rejected))  # no alarm

    spread = float(np.std([b["features"]["mean_radius"] for b in steady]))
    shifted = [
        {
            **b,
            "features": {**b["features"], "mean_radius": b["features"]["mean_radius"] + 2 * spread},
        }
        for b, _ in dataset.sample_tasks(300, seed=22)
    ]
    results = await handler([incoming(b, n) for n, b in enumerate(shifted)])
    extra = [o for r in results if not isinstance(r, Rejected) for o in r[1:]]
    assert extra, "a shifted feature raises a drift alarm"
    assert all(o.topic == "t.control" for o in extra)
    subjects = {o.event.subject for o in extra}
    assert "drift/tumor_screening/1/mean_radius/scoring" in subjects  # this replica's vote
    assert len(results[-1]) > 1  # the alarms ride with the batch's last record
