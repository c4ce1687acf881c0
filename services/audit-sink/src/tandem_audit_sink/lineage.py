"""A task's story from the ledger, pure: its events in pipeline order, the model and policy
versions they name, which decided tasks miss a stage, and which were decided more than once."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem_audit_sink.ledger import StoredEntry, document_content_hash

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


@dataclass(frozen=True)
class Decision:
    """One decision event of a task, as the ledger recorded it."""

    seq: int
    event_id: str
    source: str
    outcome: str | None
    decided_by: str | None


@dataclass
class Completeness:
    decided: int = 0
    missing: dict[str, list[str]] = field(default_factory=dict)  # task id -> missing stages
    orphans: dict[str, list[str]] = field(default_factory=dict)  # task id -> its event types
    # task id -> its decisions, for the tasks with more than one distinct decision event
    decided_more_than_once: dict[str, list[Decision]] = field(default_factory=dict)
    event_conflicts: list[StoredEntry] = field(default_factory=list)  # (source, id) conflicts

    @property
    def conflicting(self) -> list[str]:
        """The tasks decided more than once with different outcomes."""
        return [
            task_id
            for task_id, decisions in self.decided_more_than_once.items()
            if len({d.outcome for d in decisions}) > 1
        ]

    @property
    def complete(self) -> bool:
        return not (
            self.missing or self.orphans or self.decided_more_than_once or self.event_conflicts
        )


def completeness(
    rows: Iterable[tuple[str, str, str]], conflicts: Sequence[StoredEntry] = ()
) -> Completeness:
    """From (task id, event type, canonical entry) of the pipeline's stages: the decided tasks
    that miss a stage, the events whose task was never submitted, and the tasks with more than
    one distinct decision event, whatever their ids or sources (one decision re-sent under
    another id or source, with the same content, counts once). ``conflicts`` are the (source,
    id) conflicts to report beside them."""
    seen: dict[str, set[str]] = {}
    routed_first: set[str] = set()
    decisions: dict[str, dict[str, Decision]] = {}  # task id -> content hash -> first decision
    for task_id, event_type, canonical in rows:
        seen.setdefault(task_id, set()).add(event_type)
        if event_type == DECIDED:
            doc = json.loads(canonical)
            data = doc.get("data")
            if isinstance(data, dict) and data.get("decided_by") in ROUTED_FIRST:
                routed_first.add(task_id)
            distinct = decisions.setdefault(task_id, {})
            distinct.setdefault(document_content_hash(doc), _decision(doc))
    report = Completeness(event_conflicts=list(conflicts))
    for task_id, by_content in sorted(decisions.items()):
        if len(by_content) > 1:
            report.decided_more_than_once[task_id] = sorted(
                by_content.values(), key=lambda d: d.seq
            )
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


def _decision(doc: dict[str, Any]) -> Decision:
    data = doc.get("data")
    data = data if isinstance(data, dict) else {}
    outcome, decided_by = data.get("outcome"), data.get("decided_by")
    return Decision(
        seq=int(doc.get("seq") or 0),
        event_id=str(doc.get("id")),
        source=str(doc.get("source")),
        outcome=outcome if isinstance(outcome, str) else None,
        decided_by=decided_by if isinstance(decided_by, str) else None,
    )
