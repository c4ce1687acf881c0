"""The router service: policy loaded and checked at start, one consumer of scored tasks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from tandem_shared.events import TaskScored
from tandem_shared.kafka import event_decoder
from tandem_shared.service import ServiceRuntime

from tandem_router.consumer import RouterHandler
from tandem_router.dedupe import SeenTasks
from tandem_router.loader import load_policy
from tandem_router.policy import Policy
from tandem_router.settings import RouterSettings
from tandem_router.telemetry import RouterMetrics


def create_app(settings: RouterSettings | None = None) -> FastAPI:
    """Raises PolicyError, naming the problem, when the policy file is invalid."""
    settings = settings or RouterSettings()
    policy = load_policy(settings.policy_file)
    runtime = ServiceRuntime("router", settings)
    metrics = RouterMetrics(runtime.registry)
    metrics.active_policy(policy, kill_switch=settings.kill_switch)
    handler = RouterHandler(
        policy,
        runtime.topics,
        metrics,
        SeenTasks(settings.dedupe_capacity),
        kill_switch=settings.kill_switch,
    )
    runtime.add_consumer(
        settings.group_id,
        [runtime.topics.scored],
        event_decoder({"tandem.task.scored.v1": TaskScored}),
        handler,
    )
    return runtime.app("Tandem router", routers=[_policy_routes(policy)])


def _policy_routes(policy: Policy) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["policy"])

    @router.get("/policy", summary="The active routing policy")
    async def active_policy() -> dict[str, Any]:
        return policy.model_dump(mode="json")

    return router
