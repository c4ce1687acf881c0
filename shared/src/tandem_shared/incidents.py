"""Incidents: what did go wrong, as a timeline (what fired, who acknowledged, the kill switch
or rollback used, the resolution and the lesson), linked to the risks of the register. Each
version of an incident is a record on the control topic (key ``incident/ID``, kind
``incident``), so the audit ledger keeps its whole history with who wrote each step."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tandem_shared.risks import SLUG, RiskId, Short

IncidentId = Annotated[str, StringConstraints(pattern=SLUG)]
# What people add to a timeline; "fired" and "alert_resolved" come from Alertmanager, "opened"
# from whoever opened it.
Step = Literal["acknowledged", "action", "resolution", "lesson", "note"]
MAX_STEPS = 500  # a timeline longer than this is a story for a document, linked in a note
MAX_RISKS = 50  # the risks one incident links


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entry(_Strict):
    """One step of the timeline, by whom and when."""

    kind: (
        Literal["opened", "fired", "alert_resolved", "acknowledged", "action", "resolution"] | Step
    )
    at: datetime
    by: str
    text: Annotated[str, StringConstraints(max_length=2000)] = ""


class Incident(_Strict):
    id: IncidentId
    title: Short
    status: Literal["open", "closed"]
    risks: list[RiskId] = Field(default_factory=list, max_length=MAX_RISKS)
    alert: str | None = Field(default=None, description="the alert that opened it, if one did")
    timeline: list[Entry] = Field(max_length=MAX_STEPS)
    version: Annotated[int, Field(ge=1)]


def incident_key(incident_id: str) -> str:
    return f"incident/{incident_id}"
