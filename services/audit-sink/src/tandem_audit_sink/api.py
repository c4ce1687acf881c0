"""The auditor's HTTP API: lineage, completeness, checkpoints, proofs, export (verification:
verify_api.py; what the document says besides the routes: openapi.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StringConstraints
from tandem_shared.auth import Principal, require_role
from tandem_shared.envelope import utcnow
from tandem_shared.events import LedgerCheckpoint
from tandem_shared.limits import TaskIdParam
from tandem_shared.times import Timestamp, WindowError, bounded_window

from tandem_audit_sink.checkpoint import Checkpoint
from tandem_audit_sink.consumer import MAX_ATTRIBUTE
from tandem_audit_sink.export import ExportFilter, export_query
from tandem_audit_sink.ledger import StoredEntry, document_of
from tandem_audit_sink.lineage import STAGES, completeness, stage_order, versions_of
from tandem_audit_sink.openapi import (
    CHECKPOINTS_LINKS,
    COMPLETENESS_LINKS,
    LATEST_LINKS,
    LINEAGE_LINKS,
    PROOF_LINKS,
    RESPONSES,
    UNAVAILABLE,
    invalid,
    refused,
)
from tandem_audit_sink.roots import Root
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.shards import ShardedLedger, ShardedProof
from tandem_audit_sink.store import AmbiguousEvent, ConsistencyProof, LedgerError

Auditor = Annotated[Principal, Depends(require_role("auditor"))]
# What a BIGINT holds: a larger seq or tree size names nothing, and no driver would send it.
LARGEST = 2**63 - 1
# An id, source or type as the ledger keeps them: longer ones, or ones with a NUL, are recorded
# as raw records instead (consumer.py), and PostgreSQL refuses a NUL with an error, not a miss.
LedgerText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE, pattern=r"^[^\x00]+$")
]


def _ledger(request: Request) -> ShardedLedger:
    ledger: ShardedLedger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[ShardedLedger, Depends(_ledger)]
# A shard of the ledger by its number; one that does not exist is a 404.
ShardParam = Annotated[int, Query(ge=0, le=1023, description="The shard [0].")]


class AuditEvent(BaseModel):
    seq: int
    shard: int = 0
    event_id: str
    type: str
    source: str
    time: datetime
    topic: str
    model: dict[str, Any] | None
    policy: dict[str, Any] | None
    data: Any
    # the seq of the first entry of this (source, id), when this one recorded other content
    conflict_of: int | None = None


class TaskLineage(BaseModel):
    task_id: str
    events: list[AuditEvent]


class DecisionOut(BaseModel):
    seq: int
    event_id: str
    source: str
    outcome: str | None
    decided_by: str | None


class EventConflictOut(BaseModel):
    """A record whose (source, id) the ledger held already with other content."""

    seq: int
    shard: int = 0  # first_seq is of the same shard
    first_seq: int
    event_id: str
    source: str
    type: str
    task_id: str

    @classmethod
    def of(cls, entry: StoredEntry) -> EventConflictOut:
        return cls(
            seq=entry.seq,
            shard=entry.shard,
            first_seq=entry.conflict_of or 0,
            event_id=entry.event_id,
            source=entry.source,
            type=entry.event_type,
            task_id=entry.subject,
        )


class CompletenessReport(BaseModel):
    complete: bool
    decided_tasks: int
    missing_stages: dict[str, list[str]]
    events_without_task: dict[str, list[str]]
    # tasks with more than one distinct decision event (any ids or sources), their decisions
    decided_more_than_once: dict[str, list[DecisionOut]] = {}
    # of those, the tasks whose decisions name different outcomes
    conflicting_decisions: list[str] = []
    # records whose (source, id) was recorded before with other content
    event_conflicts: list[EventConflictOut] = []


def checkpoint_out(checkpoint: Checkpoint) -> LedgerCheckpoint:
    """A checkpoint reads the same from the API as from its topic."""
    return LedgerCheckpoint.model_validate(checkpoint.document())


class ShardHeadOut(BaseModel):
    shard: int
    origin: str
    tree_size: int
    root_hash: str


class LedgerRoot(BaseModel):
    """A signed root over the shards: the latest checkpoint of each, signed as one statement
    (the canonical JSON of origin, issued_at and heads, ordered by shard)."""

    origin: str
    issued_at: datetime
    heads: list[ShardHeadOut]
    digest: str = Field(description="SHA-256 of the signed statement")
    public_key: str
    key_id: str
    signature: str

    @classmethod
    def of(cls, root: Root) -> LedgerRoot:
        return cls.model_validate(root.document())


class InclusionProofOut(BaseModel):
    """Everything a verifier needs besides a checkpoint it trusts: the entry as hashed, its
    shard, its index in the shard's tree and the path to the checkpoint's root; in a ledger of
    several shards, the signed root that names that checkpoint too."""

    event_id: str
    shard: int = 0
    leaf_index: int
    tree_size: int
    entry: str
    leaf_hash: str
    path: list[str]
    checkpoint: LedgerCheckpoint
    root: LedgerRoot | None = None

    @classmethod
    def of(cls, found: ShardedProof) -> InclusionProofOut:
        proof = found.proof
        return cls(
            event_id=proof.entry.event_id,
            shard=proof.entry.shard,
            leaf_index=proof.entry.seq - 1,
            tree_size=proof.checkpoint.tree_size,
            entry=proof.entry.canonical,
            leaf_hash=proof.entry.leaf_hash,
            path=proof.path,
            checkpoint=checkpoint_out(proof.checkpoint),
            root=LedgerRoot.of(found.root) if found.root else None,
        )


class ConsistencyProofOut(BaseModel):
    first: LedgerCheckpoint
    second: LedgerCheckpoint
    path: list[str]

    @classmethod
    def of(cls, proof: ConsistencyProof) -> ConsistencyProofOut:
        return cls(
            first=checkpoint_out(proof.first),
            second=checkpoint_out(proof.second),
            path=proof.path,
        )


router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=RESPONSES)


def _not_found(exc: LedgerError) -> HTTPException:
    return HTTPException(404, str(exc))


@router.get(
    "/tasks/{task_id:path}",
    responses=LINEAGE_LINKS
    | {404: refused("The ledger holds no event of this task.")}
    | invalid()
    | UNAVAILABLE,
)
async def task_lineage(task_id: TaskIdParam, ledger: LedgerDep, _: Auditor) -> TaskLineage:
    """Every event of one task (its subject) in pipeline order (submitted, scored, routed,
    decided, feedback, then anything else), each with the model and policy it names.
    Subjects may contain slashes."""
    rows = sorted(await ledger.task_events(task_id), key=lambda r: stage_order(r.event_type, r.seq))
    if not rows:
        raise HTTPException(404, f"no audit events for task {task_id!r}")
    events = []
    for row in rows:
        data = document_of(row).get("data")
        model, policy = versions_of(data)
        events.append(
            AuditEvent(
                seq=row.seq,
                shard=row.shard,
                event_id=row.event_id,
                type=row.event_type,
                source=row.source,
                time=row.event_time,
                topic=row.topic,
                model=model,
                policy=policy,
                data=data,
                conflict_of=row.conflict_of,
            )
        )
    return TaskLineage(task_id=task_id, events=events)


@router.get(
    "/completeness",
    responses=COMPLETENESS_LINKS
    | invalid("the window is reversed or longer than the limit")
    | UNAVAILABLE,
)
async def task_completeness(
    request: Request,
    ledger: LedgerDep,
    _: Auditor,
    since: Annotated[
        Timestamp | None, Query(description="From then [7 days before until]; before until.")
    ] = None,
    until: Annotated[Timestamp | None, Query(description="Before then [now].")] = None,
) -> CompletenessReport:
    """Of the tasks with a stage recorded in [since, until): decided tasks that miss a stage
    (submitted, scored, and routed when people decided), events whose task was never submitted,
    tasks decided more than once (those with different outcomes named apart); and the records
    recorded then whose (source, id) came again with other content. A task's stages recorded
    outside the window count too. ``complete`` is true when all of these are empty. The window
    defaults to the last 7 days and spans at most ``TANDEM_AUDIT_COMPLETENESS_MAX_DAYS`` (92):
    each call reads all of it. Times are RFC 3339 with their offset; a window that ends before
    it starts, or is longer, is 422."""
    settings: AuditSettings = request.app.state.runtime.settings
    try:
        start, end = bounded_window(since, until, settings.completeness_max_days, utcnow())
    except WindowError as exc:
        raise HTTPException(422, str(exc)) from exc
    report = completeness(
        await ledger.stages(STAGES, start, end), await ledger.conflicts(start, end)
    )
    return CompletenessReport(
        complete=report.complete,
        decided_tasks=report.decided,
        missing_stages=report.missing,
        events_without_task=report.orphans,
        decided_more_than_once={
            task_id: [DecisionOut.model_validate(d, from_attributes=True) for d in decisions]
            for task_id, decisions in report.decided_more_than_once.items()
        },
        conflicting_decisions=report.conflicting,
        event_conflicts=[EventConflictOut.of(e) for e in report.event_conflicts],
    )


NO_SHARD = {404: refused("The ledger has no such shard.")}


@router.get("/checkpoints", responses=CHECKPOINTS_LINKS | NO_SHARD | invalid() | UNAVAILABLE)
async def list_checkpoints(
    ledger: LedgerDep,
    _: Auditor,
    after: Annotated[int, Query(ge=0, le=LARGEST, description="Only larger tree sizes.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    shard: ShardParam = 0,
) -> list[LedgerCheckpoint]:
    """A shard's signed checkpoints, smallest tree first."""
    try:
        return [checkpoint_out(c) for c in await ledger.checkpoints(after, limit, shard)]
    except LedgerError as exc:
        raise _not_found(exc) from exc


@router.get(
    "/checkpoints/latest",
    responses=LATEST_LINKS
    | {404: refused("No checkpoint was signed yet, or the ledger has no such shard.")}
    | UNAVAILABLE,
)
async def latest_checkpoint(
    ledger: LedgerDep, _: Auditor, shard: ShardParam = 0
) -> LedgerCheckpoint:
    try:
        latest = await ledger.latest_checkpoint(shard)
    except LedgerError as exc:
        raise _not_found(exc) from exc
    if latest is None:
        raise HTTPException(404, "no checkpoint yet")
    return checkpoint_out(latest)


@router.get("/roots", responses=invalid() | UNAVAILABLE)
async def list_roots(
    ledger: LedgerDep,
    _: Auditor,
    after: Annotated[Timestamp | None, Query(description="Issued after then.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[LedgerRoot]:
    """Signed roots over the shards, oldest first (none in a ledger of one shard: there, each
    checkpoint is the root)."""
    return [LedgerRoot.of(r) for r in await ledger.roots(after, limit)]


@router.get(
    "/roots/latest",
    responses=UNAVAILABLE | {404: refused("No root was signed yet, or the ledger has one shard.")},
)
async def latest_root(ledger: LedgerDep, _: Auditor) -> LedgerRoot:
    latest = await ledger.latest_root()
    if latest is None:
        raise HTTPException(404, "no root yet")
    return LedgerRoot.of(latest)


@router.get(
    "/proofs/inclusion",
    responses=PROOF_LINKS
    | {
        404: refused(
            "No such event (of that source, at that seq), no checkpoint of that size, or none"
            " yet that covers the entry."
        ),
        409: refused("The id names several entries: say which by source or seq."),
    }
    | invalid()
    | UNAVAILABLE,
)
async def prove_inclusion(
    ledger: LedgerDep,
    _: Auditor,
    event_id: Annotated[LedgerText, Query(description="The event's id.")],
    tree_size: Annotated[
        int | None, Query(ge=1, le=LARGEST, description="A checkpoint's size [the latest].")
    ] = None,
    source: Annotated[LedgerText | None, Query(description="The event's source.")] = None,
    seq: Annotated[int | None, Query(ge=1, le=LARGEST, description="The entry's place.")] = None,
    shard: Annotated[int | None, Query(ge=0, le=1023, description="The entry's shard.")] = None,
) -> InclusionProofOut:
    """The event's entry and its inclusion path to a checkpoint of its shard: the one at
    ``tree_size``, else the latest (in a ledger of several shards, the one the latest root
    names, with that root). Where the id names several entries (from several sources, a
    conflict, or two shards), 409 lists them: say which by ``source``, ``seq`` or ``shard``."""
    try:
        return InclusionProofOut.of(
            await ledger.prove_inclusion(event_id, tree_size, source=source, seq=seq, shard=shard)
        )
    except AmbiguousEvent as exc:
        raise HTTPException(409, str(exc)) from exc
    except LedgerError as exc:
        raise _not_found(exc) from exc


@router.get(
    "/proofs/consistency",
    responses={404: refused("No checkpoint of one of these sizes, or no such shard.")}
    | invalid("first is larger than second")
    | UNAVAILABLE,
)
async def prove_consistency(
    ledger: LedgerDep,
    _: Auditor,
    first: Annotated[int, Query(ge=1, le=LARGEST, description="A checkpoint's size.")],
    second: Annotated[
        int, Query(ge=1, le=LARGEST, description="A checkpoint's size, not less than first.")
    ],
    shard: ShardParam = 0,
) -> ConsistencyProofOut:
    """The path showing that the checkpoint at ``second`` extends the one at ``first`` (empty
    when they are the same); ``first`` larger than ``second`` is 422."""
    if first > second:
        raise HTTPException(422, "first must not be larger than second")
    try:
        return ConsistencyProofOut.of(await ledger.prove_consistency(first, second, shard))
    except LedgerError as exc:
        raise _not_found(exc) from exc


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}} | invalid() | UNAVAILABLE,
)
async def export_entries(
    ledger: LedgerDep,
    _: Auditor,
    since: Annotated[Timestamp | None, Query(description="Recorded from then.")] = None,
    until: Annotated[Timestamp | None, Query(description="Recorded before then.")] = None,
    event_type: Annotated[
        list[LedgerText] | None, Query(alias="type", description="Of these event types.")
    ] = None,
    task_type: Annotated[list[LedgerText] | None, Query(description="Of these task types.")] = None,
) -> StreamingResponse:
    """Entries recorded in [since, until), of the given event and task types, as JSON lines.
    Each line is an entry exactly as hashed: SHA-256(0x00 || line) is its leaf hash. Times are
    RFC 3339 with their offset."""
    pages = ledger.chunks(
        export_query(ExportFilter(since, until, event_type or [], task_type or []))
    )
    # Read before the answer starts: a database that is down is a 503, not a stream cut short.
    first = await anext(pages, None)

    async def lines() -> AsyncIterator[bytes]:
        page = first
        while page is not None:
            yield "".join(f"{row.canonical}\n" for row in page).encode("utf-8")
            page = await anext(pages, None)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
