"""The risk register: what can go wrong with a decision workflow, who owns it, and what keeps
it in check. Each risk is a versioned record on the control topic (key ``risk/ID``, kind
``risk``): authored, signed and recorded by the audit sink like every control change, so the
register's history is the ledger's."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# The ids of risks and incidents: lowercase, digits and _ . -, as in a key of the control topic.
SLUG = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
RiskId = Annotated[str, StringConstraints(pattern=SLUG)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Likelihood = Literal["rare", "unlikely", "possible", "likely", "almost_certain"]
Impact = Literal["negligible", "minor", "moderate", "major", "severe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mitigation(_Strict):
    """What keeps the risk in check: a policy rule (its reason code), an alert (its name), a
    model gate (the promotion gate, a segment margin), the kill switch, or something else."""

    kind: Literal["policy_rule", "alert", "model_gate", "kill_switch", "other"]
    ref: Short = Field(description="the rule's reason, the alert's name, the gate, ...")
    note: Annotated[str, StringConstraints(max_length=2000)] = ""


class Risk(_Strict):
    """One risk as its owner writes it."""

    title: Short
    harm: Text = Field(description="who is harmed, and how, when it happens")
    task_types: list[Short] = Field(default_factory=list, max_length=50)
    segments: list[Short] = Field(
        default_factory=list, max_length=50, description="the segments it concerns (clinic=east)"
    )
    likelihood: Likelihood
    impact: Impact
    owner: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="the subject of the person accountable for it (as in their token)"
    )
    mitigations: list[Mitigation] = Field(default_factory=list, max_length=50)
    review_by: date = Field(description="when it is next reviewed")


class RiskRecord(Risk):
    """A risk as the register holds it: its id and version (1 for the first)."""

    id: RiskId
    version: Annotated[int, Field(ge=1)]


def risk_key(risk_id: str) -> str:
    return f"risk/{risk_id}"
