"""The ledger's verification over HTTP: ask for a whole one (it runs in the background, one at a
time), and read the latest results (verification.py runs them)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from tandem_shared.auth import Principal, require_role

from tandem_audit_sink.openapi import RESPONSES, invalid, link, refused
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.verification import Running, Verification, Verifications

RESULT = "/v1/audit/verify"
Auditor = Annotated[Principal, Depends(require_role("auditor"))]
# Asking reveals nothing and costs at most one verification waiting behind the running one.
Asker = Annotated[Principal, Depends(require_role("auditor", "admin"))]


def _verifications(request: Request) -> Verifications:
    verifications: Verifications = request.app.state.verifications
    return verifications


VerificationsDep = Annotated[Verifications, Depends(_verifications)]


class RunningVerification(BaseModel):
    whole: bool
    requested: bool
    started_at: datetime
    entries: int = Field(description="entries checked so far")

    @classmethod
    def of(cls, running: Running) -> RunningVerification:
        return cls(
            whole=running.whole,
            requested=running.requested,
            started_at=running.started_at,
            entries=running.entries,
        )


class LedgerVerification(BaseModel):
    """The latest verification the sink finished (on its timer, or asked for), not one run for
    this request: ask for a new one with ``POST /v1/audit/verify``."""

    whole: bool = Field(
        description="every entry from the first; false: those added since the last good one"
    )
    requested: bool = Field(description="asked for with POST, not run on the sink's timer")
    started_at: datetime = Field(description="it covers the ledger as it was from then")
    finished_at: datetime
    seconds: float
    from_tree_size: int = Field(
        description="the size of the trusted checkpoint it went on from; 0 when whole"
    )
    ok: bool
    entries: int = Field(description="entries checked")
    tree_size: int = Field(description="the tree size reached")
    root_hash: str
    checkpoints_checked: int
    failed_seq: int | None = None
    reason: str | None = None
    running: RunningVerification | None = Field(
        default=None, description="a verification under way now"
    )
    requested_at: datetime | None = Field(
        default=None, description="when a whole one was asked for that has not started yet"
    )

    @classmethod
    def of(cls, done: Verification, verifications: Verifications) -> LedgerVerification:
        result = done.result
        running = verifications.running
        return cls(
            whole=done.whole,
            requested=done.requested,
            started_at=done.started_at,
            finished_at=done.finished_at,
            seconds=round(done.seconds, 3),
            from_tree_size=done.from_size,
            ok=result.ok,
            entries=result.entries,
            tree_size=result.tree_size,
            root_hash=result.root_hash,
            checkpoints_checked=result.checkpoints,
            failed_seq=result.failure.seq if result.failure else None,
            reason=result.failure.reason if result.failure else None,
            running=RunningVerification.of(running) if running else None,
            requested_at=verifications.asked_at,
        )


class VerificationRequested(BaseModel):
    """A whole verification will start at ``requested_at`` or later: its result is the one at
    ``result`` whose ``started_at`` is not earlier."""

    requested_at: datetime
    result: str = f"{RESULT}?whole=true"


router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=RESPONSES)


@router.post(
    "/verify",
    status_code=202,
    responses={
        202: {
            "headers": {
                "Location": {
                    "description": "Where the result will be.",
                    "schema": {"type": "string"},
                }
            },
            "links": {
                "GetResult": link(
                    "get",
                    RESULT,
                    "The latest whole verification: poll until it is this one.",
                    whole=True,
                )
            },
        }
    },
)
async def request_verification(
    response: Response, verifications: VerificationsDep, _: Asker
) -> VerificationRequested:
    """Ask for a whole verification of the ledger as it is now. It runs in the background, one
    at a time: asks made while one waits to start share it. Poll ``GET /v1/audit/verify
    ?whole=true`` until its ``started_at`` is at or after ``requested_at``."""
    asked = VerificationRequested(requested_at=verifications.request())
    response.headers["Location"] = asked.result
    return asked


@router.get(
    "/verify",
    responses=invalid()
    | {
        503: refused("No such verification has finished yet; try again after Retry-After.")
        | {"headers": {"Retry-After": {"description": "Seconds.", "schema": {"type": "integer"}}}}
    },
)
async def latest_verification(
    request: Request,
    verifications: VerificationsDep,
    _: Auditor,
    whole: Annotated[bool, Query(description="The latest whole verification only.")] = False,
) -> LedgerVerification:
    """The latest verification the sink finished, whole or only of what was new (``whole``
    picks the latest whole one): when it ran, how long it took, the tree size it reached and
    the first bad entry, if any."""
    done = verifications.latest_whole if whole else verifications.latest
    if done is not None:
        return LedgerVerification.of(done, verifications)
    settings: AuditSettings = request.app.state.runtime.settings
    running, retry = verifications.running, math.ceil(settings.verify_seconds)
    if running is not None:
        what, retry = f"one is under way ({running.entries} entries checked so far)", 2
    elif verifications.asked_at is not None:
        what, retry = "one was asked for and waits to start", 2
    else:
        what = "ask for one with POST /v1/audit/verify"
    kind = "whole verification" if whole else "verification"
    raise HTTPException(
        503,
        f"no {kind} of the ledger has finished yet; {what}",
        headers={"Retry-After": str(retry)},
    )


@router.api_route(
    "/verify", methods=["DELETE", "OPTIONS", "PATCH", "PUT", "TRACE"], include_in_schema=False
)
async def other_methods() -> JSONResponse:
    """405 naming both methods of the path: Starlette's own names those of its first route."""
    return JSONResponse(
        {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "GET, HEAD, POST"}
    )
