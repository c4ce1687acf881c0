"""The risk register's endpoints: risks are versioned records on the control topic (see
tandem_shared.risks), so each change is authored, signed and lands in the audit ledger.

Seniors, admins and auditors read it. An admin writes any risk; a senior writes the risks they
own. Each call reads the control topic, as the other admin endpoints do."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import ValidationError
from tandem_shared.control import risk_change
from tandem_shared.envelope import utcnow
from tandem_shared.events import ControlChanged
from tandem_shared.risks import Risk, RiskId, RiskRecord, risk_key

from tandem_review_api import control_records
from tandem_review_api.errors import RESPONSES, Forbidden, NotFound
from tandem_review_api.inputs import strict_json
from tandem_review_api.roles import Overseer, Steward

RiskIn = Annotated[Risk, strict_json(Risk)]
router = APIRouter(prefix="/v1", tags=["risks"], responses=RESPONSES)


class RiskOut(RiskRecord):
    changed_by: str
    changed_at: datetime
    review_overdue: bool  # its review_by date has passed

    @classmethod
    def of(cls, change: ControlChanged) -> RiskOut | None:
        """The risk a control record holds; None for one that is not a risk (it is logged by
        the topic's readers, never shown as one)."""
        try:
            record = RiskRecord.model_validate(change.value)
        except ValidationError:
            return None
        return cls(
            **record.model_dump(),
            changed_by=change.changed_by,
            changed_at=change.changed_at,
            review_overdue=record.review_by < utcnow().date(),
        )


async def _register(request: Request) -> dict[str, RiskOut]:
    risks = (RiskOut.of(c) for c in await control_records.latest(request, "risk"))
    return {r.id: r for r in risks if r is not None}


@router.get("/risks", response_model=list[RiskOut])
async def list_risks(_: Overseer, request: Request) -> list[RiskOut]:
    """Every risk of the register at its latest version, by id; ``review_overdue`` marks those
    whose review date has passed."""
    return sorted((await _register(request)).values(), key=lambda r: r.id)


@router.get("/risks/{risk_id}/history", response_model=list[RiskOut])
async def risk_history(risk_id: RiskId, _: Overseer, request: Request) -> list[RiskOut]:
    """Every version of the risk the control topic still holds, oldest first (the audit
    ledger keeps them all); 404 for a risk never written."""
    changes = await control_records.history(request, risk_key(risk_id))
    versions = [r for r in (RiskOut.of(c) for c in changes) if r is not None]
    if not versions:
        raise NotFound(f"no risk {risk_id}")
    return versions


@router.put("/risks/{risk_id}", response_model=RiskOut)
async def put_risk(risk_id: RiskId, body: RiskIn, who: Steward, request: Request) -> RiskOut:
    """Write the risk's next version (1 for a new one). An admin writes any risk; a senior
    only one they own now (403 otherwise, and for a new one)."""
    current = (await _register(request)).get(risk_id)
    if not who.has("admin") and (current is None or current.owner != who.subject):
        raise Forbidden(f"risk {risk_id}: only an admin or its owner may change it")
    record = RiskRecord(
        **body.model_dump(), id=risk_id, version=(current.version + 1) if current else 1
    )
    change = risk_change(record, who.subject)
    await control_records.publish(request, change)
    written = RiskOut.of(change.data)
    assert written is not None
    return written
