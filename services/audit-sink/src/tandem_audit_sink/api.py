"""The auditor's HTTP API: a task's lineage and the verification of the whole chain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from tandem_shared.auth import Principal, require_role

from tandem_audit_sink.ledger import VerifyResult, document_of
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.store import Ledger
from tandem_audit_sink.telemetry import AuditMetrics

Auditor = Annotated[Principal, Depends(require_role("auditor"))]


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(_ledger)]


class AuditEvent(BaseModel):
    seq: int
    event_id: str
    type: str
    source: str
    time: datetime
    topic: str
    data: Any


class TaskLineage(BaseModel):
    task_id: str
    events: list[AuditEvent]


class VerifyReport(BaseModel):
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    failed_seq: int | None = None
    reason: str | None = None

    @classmethod
    def of(cls, result: VerifyResult) -> VerifyReport:
        return cls(
            ok=result.ok,
            entries=result.entries,
            head_seq=result.head.seq,
            head_hash=result.head.chain_hash,
            failed_seq=result.failure.seq if result.failure else None,
            reason=result.failure.reason if result.failure else None,
        )


_STAGE = {
    "tandem.task.submitted.v1": 0,
    "tandem.task.scored.v1": 1,
    "tandem.task.routed.v1": 2,
    "tandem.decision.made.v1": 3,
    "tandem.feedback.recorded.v1": 4,
}

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/tasks/{task_id:path}")
async def task_lineage(task_id: str, ledger: LedgerDep, _: Auditor) -> TaskLineage:
    """Every event of one task (its subject) in pipeline order: submitted, scored, routed,
    decided, feedback, then anything else; ledger order within a stage. The sink reads the
    topics side by side, so ledger order alone can put a later stage first.
    Subjects may contain slashes."""
    rows = sorted(
        await ledger.task_events(task_id), key=lambda r: (_STAGE.get(r.event_type, 9), r.seq)
    )
    if not rows:
        raise HTTPException(404, f"no audit events for task {task_id!r}")
    events = [
        AuditEvent(
            seq=row.seq,
            event_id=row.event_id,
            type=row.event_type,
            source=row.source,
            time=row.event_time,
            topic=row.topic,
            data=document_of(row).get("data"),
        )
        for row in rows
    ]
    return TaskLineage(task_id=task_id, events=events)


@router.get("/verify")
async def verify_ledger(request: Request, ledger: LedgerDep, _: Auditor) -> VerifyReport:
    """Recompute every hash of the chain and report the first bad row, if any."""
    settings: AuditSettings = request.app.state.runtime.settings
    metrics: AuditMetrics = request.app.state.audit_metrics
    result = await ledger.verify(settings.verify_chunk_size)
    metrics.verified(result)
    return VerifyReport.of(result)
