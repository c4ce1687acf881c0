"""Admin endpoints: change which model version scores, through control events on tandem.control
(the scoring replicas follow them live; the audit sink records who changed what)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from tandem_shared.auth import Principal
from tandem_shared.control import (
    ModelState,
    model_change,
    model_state,
    promoted,
    publish_change,
    read_control,
    registry_change,
    rolled_back,
    shadowed,
)
from tandem_shared.promotion import Evidence, GateRefused, gate

from tandem_review_api.errors import RESPONSES, Conflict
from tandem_review_api.inputs import strict_json
from tandem_review_api.roles import Admin

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=RESPONSES)


class PromotionRequest(BaseModel):
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    evidence: Evidence | None = Field(
        default=None, description="The validation it goes live on (`tandem model validate`)."
    )
    override_reason: str | None = Field(
        default=None,
        max_length=1000,
        description="Promote although the gate refuses (or without evidence), for this reason.",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"version": "2", "override_reason": "first version, validated offline"}]
        }
    }


# Its evidence is read as the document says: a count is an integer, "weak" a boolean.
PromotionIn = Annotated[PromotionRequest, strict_json(PromotionRequest)]


class Shadow(BaseModel):
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The version to score beside the live one; null ends shadowing.",
    )


class ModelStateOut(BaseModel):
    name: str
    state: ModelState | None


async def _current(request: Request, name: str) -> ModelState | None:
    runtime = request.app.state.runtime
    changes = await read_control(
        runtime.settings.kafka.bootstrap_servers, runtime.topics, runtime.control.trust
    )
    return model_state(changes, name)


async def _publish(request: Request, name: str, state: ModelState, who: Principal) -> ModelStateOut:
    runtime = request.app.state.runtime
    change = model_change(name, state, who.subject)
    await publish_change(runtime.publisher, runtime.topics, change, runtime.control.signer)
    return ModelStateOut(name=name, state=state)


@router.get("/models/{name}", response_model=ModelStateOut)
async def get_model(name: str, _: Admin, request: Request) -> ModelStateOut:
    """The versions the control topic holds for a model (null: the replicas' configured default)."""
    return ModelStateOut(name=name, state=await _current(request, name))


@router.post("/models/{name}/promote", response_model=ModelStateOut)
async def promote(name: str, body: PromotionIn, who: Admin, request: Request) -> ModelStateOut:
    """Make a version live on its evidence. The gate refuses (409) a candidate less accurate
    than the live version, or worse on a segment by more than the margin, and a promotion with
    no evidence, unless an override reason is given; evidence and reason are recorded."""
    try:
        promotion = gate(body.version, body.evidence, body.override_reason)
    except GateRefused as exc:
        raise Conflict(f"model {name}: {exc}") from exc
    runtime = request.app.state.runtime
    record = registry_change(name, body.version, promotion, who.subject)
    await publish_change(runtime.publisher, runtime.topics, record, runtime.control.signer)
    return await _publish(request, name, promoted(await _current(request, name), body.version), who)


@router.post("/models/{name}/rollback", response_model=ModelStateOut)
async def rollback(name: str, who: Admin, request: Request) -> ModelStateOut:
    try:
        state = rolled_back(await _current(request, name))
    except ValueError as exc:
        raise Conflict(f"model {name}: {exc}") from exc
    return await _publish(request, name, state, who)


@router.post("/models/{name}/shadow", response_model=ModelStateOut)
async def shadow(name: str, body: Shadow, who: Admin, request: Request) -> ModelStateOut:
    """Score a candidate version beside the live one; it is recorded, it never routes."""
    try:
        state = shadowed(await _current(request, name), body.version)
    except ValueError as exc:
        raise Conflict(f"model {name}: {exc}") from exc
    return await _publish(request, name, state, who)
