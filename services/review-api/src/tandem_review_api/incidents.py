"""Incidents: opened by hand or by an alert (an Alertmanager webhook), linked to risks, with a
timeline people add to until the resolution and the lesson. Each change writes the incident's
next version on the control topic (tandem_shared.incidents), so the ledger keeps them all.

Seniors, admins and auditors read them; seniors and admins open them and add to them;
Alertmanager posts with a token of the ``service`` role (or an admin's)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tandem_shared.control import incident_change
from tandem_shared.envelope import utcnow
from tandem_shared.incidents import MAX_RISKS, MAX_STEPS, Entry, Incident, IncidentId, Step
from tandem_shared.risks import SLUG, RiskId, Short

from tandem_review_api import control_records
from tandem_review_api.errors import RESPONSES, Conflict, NotFound
from tandem_review_api.inputs import strict_json
from tandem_review_api.roles import Overseer, Producer, Steward

router = APIRouter(prefix="/v1", tags=["incidents"], responses=RESPONSES)
# After the resolution only what was learnt, or a note, may follow.
AFTER_CLOSING = ("lesson", "note")
RISK_ID = re.compile(SLUG)


class Opening(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Short
    risks: list[RiskId] = Field(default_factory=list, max_length=MAX_RISKS)
    text: Annotated[str, Field(max_length=2000)] = ""


class Adding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Step = Field(
        description="acknowledged, action (a kill switch, a rollback...), resolution (closes "
        "it), lesson or note"
    )
    text: Annotated[str, Field(max_length=2000)] = ""
    risks: list[RiskId] = Field(
        default_factory=list, max_length=MAX_RISKS, description="risks to link it to as well"
    )


class Alert(BaseModel):
    """One alert of an Alertmanager webhook (version 4); fields it does not need are ignored."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime  # noqa: N815 (Alertmanager's name)
    fingerprint: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,64}$")]


class Notification(BaseModel):
    alerts: list[Alert] = Field(max_length=1000)


async def _incidents(request: Request) -> dict[str, Incident]:
    found: dict[str, Incident] = {}
    for change in await control_records.latest(request, "incident"):
        try:
            incident = Incident.model_validate(change.value)
        except ValidationError:
            continue  # not one this API wrote; the topic's readers log such records
        found[incident.id] = incident
    return found


async def _write(request: Request, incident: Incident, who: str) -> Incident:
    await control_records.publish(request, incident_change(incident, who))
    return incident


def _linked(incident: Incident, risks: list[str]) -> list[str]:
    linked = list(dict.fromkeys([*incident.risks, *risks]))
    if len(linked) > MAX_RISKS:
        raise Conflict(
            f"incident {incident.id} would link {len(linked)} risks, {MAX_RISKS} at most"
        )
    return linked


def _next(incident: Incident, entry: Entry, **changes: Any) -> Incident:
    if len(incident.timeline) >= MAX_STEPS:
        raise Conflict(f"incident {incident.id} has {MAX_STEPS} steps: open another")
    timeline = [*incident.timeline, entry]
    return incident.model_copy(
        update={"timeline": timeline, "version": incident.version + 1, **changes}
    )


@router.get("/incidents", response_model=list[Incident])
async def list_incidents(
    _: Overseer,
    request: Request,
    status: Annotated[Literal["open", "closed"] | None, Query()] = None,
) -> list[Incident]:
    """The incidents at their latest version, the most recently opened first."""
    incidents = [i for i in (await _incidents(request)).values() if status in (None, i.status)]
    return sorted(incidents, key=lambda i: i.timeline[0].at, reverse=True)


# Not POST /incidents, and before /incidents/{incident_id}: of the routes a path matches,
# the first answers OPTIONS with its methods alone.
@router.post("/incidents/open", response_model=Incident, status_code=201)
async def open_incident(
    body: Annotated[Opening, strict_json(Opening)], who: Steward, request: Request
) -> Incident:
    """Open an incident by hand, linked to the risks it concerns."""
    opened = Entry(kind="opened", at=utcnow(), by=who.subject, text=body.text)
    incident = Incident(
        id=f"inc-{uuid.uuid4().hex[:12]}",
        title=body.title,
        status="open",
        risks=body.risks,
        timeline=[opened],
        version=1,
    )
    return await _write(request, incident, who.subject)


@router.get("/incidents/{incident_id}", response_model=Incident)
async def get_incident(incident_id: IncidentId, _: Overseer, request: Request) -> Incident:
    incident = (await _incidents(request)).get(incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    return incident


@router.post("/incidents/{incident_id}/timeline", response_model=Incident)
async def add_step(
    incident_id: IncidentId,
    body: Annotated[Adding, strict_json(Adding)],
    who: Steward,
    request: Request,
) -> Incident:
    """Add a step: who acknowledged, an action taken, the resolution (which closes it), the
    lesson, a note. A closed incident takes lessons and notes only (409 otherwise)."""
    incident = (await _incidents(request)).get(incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    if incident.status == "closed" and body.kind not in AFTER_CLOSING:
        raise Conflict(f"incident {incident_id} is closed: add a lesson or a note")
    entry = Entry(kind=body.kind, at=utcnow(), by=who.subject, text=body.text)
    status = "closed" if body.kind == "resolution" else incident.status
    changed = _next(incident, entry, risks=_linked(incident, body.risks), status=status)
    return await _write(request, changed, who.subject)


@router.post("/alerts", response_model=list[Incident], tags=["incidents"])
async def alertmanager(
    body: Annotated[Notification, strict_json(Notification)], who: Producer, request: Request
) -> list[Incident]:
    """Alertmanager's webhook (``webhook_configs`` with a bearer token of the ``service``
    role): a firing alert opens an incident (or reopens its closed one, or adds to its open
    one once per firing), linked to the risks in the alert's ``risk`` label (comma-separated);
    a resolved alert adds that to the timeline (people close the incident). Returns the
    incidents written."""
    known = await _incidents(request)
    written: list[Incident] = []
    for alert in body.alerts:
        incident_id = f"alert-{alert.fingerprint.lower()}"
        # What an alert says is cut to what an incident keeps: a rule may say more.
        name = alert.labels.get("alertname", "an alert")[:200]
        text = alert.annotations.get("summary", name)[:2000]
        named = (r.strip() for r in alert.labels.get("risk", "").split(","))
        risks = list(dict.fromkeys(r for r in named if RISK_ID.match(r)))[:MAX_RISKS]
        current = known.get(incident_id)
        firing = alert.status == "firing"
        if current is None and not firing:
            continue  # resolved before it was seen firing here: nothing to add to
        if (
            firing
            and current is not None
            and any(e.kind == "fired" and e.at == alert.startsAt for e in current.timeline)
        ):
            continue  # Alertmanager repeats a firing alert: one step per firing
        if not firing and current is not None and current.timeline[-1].kind == "alert_resolved":
            continue  # and may repeat its resolution
        entry = Entry(
            kind="fired" if firing else "alert_resolved",
            at=alert.startsAt if firing else utcnow(),
            by=who.subject,
            text=text,
        )
        if current is None:
            incident = Incident(
                id=incident_id,
                title=f"{name}: {text}"[:200],
                status="open",
                risks=risks,
                alert=name,
                timeline=[entry],
                version=1,
            )
        else:
            linked = list(dict.fromkeys([*current.risks, *risks]))[:MAX_RISKS]
            status = "open" if firing else current.status
            incident = _next(current, entry, risks=linked, status=status)
        known[incident_id] = await _write(request, incident, who.subject)
        written.append(known[incident_id])
    return written
