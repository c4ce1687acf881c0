"""A task's story from the ledger, pure: its events in pipeline order, the model and policy
versions they name, and which decided tasks miss a stage."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SUBMITTED = "tandem.task.submitted.v1"
SCORED = "tandem.task.scored.v1"
ROUTED = "tandem.task.routed.v1"
DECIDED = "tandem.decision.made.v1"
FEEDBACK = "tandem.feedback.recorded.v1"
STAGES = (SUBMITTED, SCORED, ROUTED, DECIDED, FEEDBACK)
STAGE_ORDER = {event_type: n for n, event_type in enumerate(STAGES)}
# A decision not taken by the model went through a person's queue first.
ROUTED_FIRST = {"human", "policy"}


def stage_order(event_type: str, seq: int) -> tuple[int, int]:
    """Pipeline order, then ledger order: the sink reads the topics side by side, so ledger
    order alone can put a later stage first."""
    return STAGE_ORDER.get(event_type, len(STAGES)), seq


def versions_of(data: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The model and the policy an event's data names (a scored event names its model in
    its score)."""
    if not isinstance(data, dict):
        return None, None
    model = data.get("model")
    if model is None and isinstance(data.get("score"), dict):
        model = data["score"].get("model")
    policy = data.get("policy")
    return (
        model if isinstance(model, dict) else None,
        policy if isinstance(policy, dict) else None,
    )


@dataclass
class Completeness:
    decided: int = 0
    missing: dict[str, list[str]] = field(default_factory=dict)  # task id -> missing stages
    orphans: dict[str, list[str]] = field(default_factory=dict)  # task id -> its event types

    @property
    def complete(self) -> bool:
        return not self.missing and not self.orphans


def completeness(rows: Iterable[tuple[str, str, str]]) -> Completeness:
    """From (task id, event type, canonical entry) of the pipeline's stages: the decided tasks
    that miss a stage, and the events whose task was never submitted."""
    seen: dict[str, set[str]] = {}
    routed_first: set[str] = set()
    for task_id, event_type, canonical in rows:
        seen.setdefault(task_id, set()).add(event_type)
        if event_type == DECIDED:
            data = json.loads(canonical).get("data")
            if isinstance(data, dict) and data.get("decided_by") in ROUTED_FIRST:
                routed_first.add(task_id)
    report = Completeness()
    for task_id, types in sorted(seen.items()):
        if SUBMITTED not in types:
            report.orphans[task_id] = sorted(types, key=lambda t: STAGE_ORDER[t])
            continue
        if DECIDED not in types:
            continue
        report.decided += 1
        needed = [SUBMITTED, SCORED] + ([ROUTED] if task_id in routed_first else [])
        lacking = [stage for stage in needed if stage not in types]
        if lacking:
            report.missing[task_id] = lacking
    return report
