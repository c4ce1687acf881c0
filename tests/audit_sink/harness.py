"""Pipeline events as the services build them, for the audit sink's tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tandem_shared.auth import mint_token
from tandem_shared.envelope import Event
from tandem_shared.events import (
    DecisionMade,
    EventData,
    FeedbackRecorded,
    ModelRef,
    PolicyRef,
    Score,
    TaskScored,
    TaskSubmitted,
)
from tandem_shared.settings import RuntimeSettings

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
MODEL = ModelRef(name="loan", version="1")
POLICY = PolicyRef(name="loan", version=3)
DECISION = "tandem.decision.made.v1"


def events(task_id: str) -> dict[str, Event[EventData]]:
    """One event of each pipeline stage for a task, built as the services build them."""
    task = TaskSubmitted(task_id=task_id, task_type="loan", features={"amount": 900.0})
    score = Score(model=MODEL, prediction="approve", probabilities={"approve": 0.9}, confidence=0.9)
    stages: dict[str, EventData] = {
        "submitted": task,
        "scored": TaskScored(task=task, score=score, submitted_at=NOW, scored_at=NOW),
        "decision": DecisionMade(
            task_id=task_id,
            task_type="loan",
            outcome="approve",
            decided_by="model",
            confidence=0.9,
            model=MODEL,
            policy=POLICY,
            submitted_at=NOW,
            decided_at=NOW,
        ),
        "feedback": FeedbackRecorded(
            task_id=task_id,
            task_type="loan",
            features={"amount": 900.0},
            model=MODEL,
            prediction="approve",
            probabilities={"approve": 0.9},
            confidence=0.9,
            label="approve",
            reviewer="bob",
            qa_sample=True,
            agreed=True,
            policy=POLICY,
            labelled_at=NOW,
        ),
    }
    return {
        stage: Event.derived(data, source=f"tests/{stage}", subject=task_id, stage=stage)
        for stage, data in stages.items()
    }


def record(event: Event[Any]) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    return (event.subject, event.value(), event.headers())


def bearer(*roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(RuntimeSettings(), 'alice', list(roles))}"}
