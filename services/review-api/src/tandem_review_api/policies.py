"""Admin endpoints of the policy lifecycle: validate, simulate, apply, roll back, the history and
the kill switch. Changes are control events on tandem.control that every router replica follows
live; each names the admin who made it, and the audit sink keeps it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from tandem_policy.lifecycle import Governance, PolicyChange, proposed
from tandem_policy.loader import PolicyError
from tandem_policy.whatif import WhatIf
from tandem_shared.control import KillSwitch, PolicyState
from tandem_shared.envelope import utcnow
from tandem_shared.times import Timestamp

from tandem_review_api.error_budgets import qa_verdicts
from tandem_review_api.errors import RESPONSES, Conflict, Unprocessable
from tandem_review_api.inputs import strict_json
from tandem_review_api.roles import Admin, PolicyReader
from tandem_review_api.store import ReviewStore

router = APIRouter(prefix="/v1/admin", tags=["policy"], responses=RESPONSES)


class Document(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "document": "name: default\nversion: 2\ntask_types:\n  tumor_screening:\n"
                    "    outcomes: [benign, malignant]\n    auto: {benign: 0.97}\n"
                }
            ]
        }
    )

    document: str = Field(
        min_length=1,
        max_length=1_000_000,
        description="The policy as YAML; one that is not a valid policy is 422, with its problems.",
    )


class Simulation(Document):
    since: Timestamp
    until: Timestamp | None = Field(default=None, description="Default: now.")
    reviews_per_hour: float = Field(default=30.0, gt=0, le=1_000_000)


class Validity(BaseModel):
    name: str
    version: int
    task_types: list[str]


class Control(BaseModel):
    policy: PolicyState | None
    kill_switch: KillSwitch


# Read as the document says: a time is RFC 3339 text, not a number of seconds.
SimulationIn = Annotated[Simulation, strict_json(Simulation)]


class Switch(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"on": True, "task_type": "tumor_screening"}]}
    )

    on: bool = Field(description="true: tasks go to people; false: automation is back")
    task_type: str | None = Field(
        default=None, min_length=1, max_length=64, description="Only this task type; null: all."
    )


# "on" is true or false, not 0 or 1.
SwitchIn = Annotated[Switch, strict_json(Switch)]


def _governance(request: Request) -> Governance:
    runtime = request.app.state.runtime
    return Governance(
        runtime.settings.kafka.bootstrap_servers, runtime.topics, runtime.publisher, runtime.control
    )


def _parsed(document: str) -> Validity:
    with _refusals():
        policy, _ = proposed(document)
    return Validity(name=policy.name, version=policy.version, task_types=sorted(policy.task_types))


@router.get("/policy", response_model=Control)
async def control(_: PolicyReader, request: Request) -> Control:
    """The active policy (with the one a rollback returns to) and the kill switch."""
    state, switch = await _governance(request).state()
    return Control(policy=state, kill_switch=switch)


@router.post("/policy/validate", response_model=Validity)
async def validate(body: Document, _: Admin) -> Validity:
    """422 with every problem and its line when the document is not a valid policy."""
    return _parsed(body.document)


@router.post("/policy/simulate", response_model=WhatIf)
async def simulate(body: SimulationIn, _: Admin, request: Request) -> WhatIf:
    """The window's scored events under the document beside the active policy; for a task type
    with an error budget, what each budget would cost (``budgets``), calibrated on the QA
    samples people decided in the live watch's window (TANDEM_REVIEW_API_BUDGET_WINDOW_DAYS)."""
    now = utcnow()
    with _refusals():
        policy = proposed(body.document)[0]
    verdicts = None
    if any(rules.error_budget for rules in policy.task_types.values()):  # else nothing to cost
        store: ReviewStore = request.app.state.store
        window = timedelta(days=request.app.state.runtime.settings.budget_window_days)
        verdicts = qa_verdicts(await store.qa_reviews(now - window, now))
    with _refusals():
        return await _governance(request).simulate(
            body.document, body.since, body.until or now, body.reviews_per_hour, None, verdicts
        )


@router.post("/policy/apply", response_model=PolicyState)
async def apply(body: Document, who: Admin, request: Request) -> PolicyState:
    with _refusals():
        return await _governance(request).apply(body.document, who.subject)


@router.post("/policy/rollback", response_model=PolicyState)
async def rollback(who: Admin, request: Request) -> PolicyState:
    with _refusals():
        return await _governance(request).rollback(who.subject)


@contextmanager
def _refusals() -> Iterator[None]:
    """An invalid document is 422 with its problems; a change the state refuses is 409."""
    try:
        yield
    except PolicyError as exc:
        raise Unprocessable(str(exc)) from exc
    except ValueError as exc:
        raise Conflict(str(exc)) from exc


@router.get("/policy/history", response_model=list[PolicyChange])
async def history(_: PolicyReader, request: Request) -> list[PolicyChange]:
    return await _governance(request).history()


@router.post("/kill-switch", response_model=KillSwitch)
async def kill_switch(body: SwitchIn, who: Admin, request: Request) -> KillSwitch:
    return await _governance(request).kill_switch(body.on, body.task_type, who.subject)
