"""The router service: the policy of the control topic (or the file, until one is applied), a
consumer of scored tasks, and a consumer of the control topic per replica."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI
from tandem_policy.loader import load_policy
from tandem_shared.auth import authenticate
from tandem_shared.control import CONTROL_TYPES, read_control_log
from tandem_shared.control_signing import TrustedControl
from tandem_shared.events import TaskScored
from tandem_shared.kafka import event_decoder
from tandem_shared.service import ServiceRuntime

from tandem_router.consumer import RouterHandler
from tandem_router.control import ControlFollower, RoutingControl
from tandem_router.dedupe import SeenTasks
from tandem_router.seen_log import SeenLog
from tandem_router.settings import RouterSettings
from tandem_router.telemetry import RouterMetrics

log = logging.getLogger(__name__)


def create_app(settings: RouterSettings | None = None) -> FastAPI:
    """Raises PolicyError, naming the problem, when the policy file is invalid."""
    settings = settings or RouterSettings()
    runtime = ServiceRuntime("router", settings)
    metrics = RouterMetrics(runtime.registry)
    # Every replica follows every control change: a group of its own, read from the start.
    control_group = f"{settings.group_id}-control-{uuid.uuid4().hex[:12]}"
    control = RoutingControl(
        load_policy(settings.policy_file),
        metrics,
        kill_switch=settings.kill_switch,
        stale_after_s=settings.control_stale_after_s,
        drift_vote_ttl_s=settings.drift_vote_ttl_seconds,
        last_fetch=lambda: runtime.last_fetch(control_group),
    )

    async def catch_up() -> None:
        """Apply what the control topic holds before the first task is routed. If it cannot be
        read, start anyway: tasks go to people until it can."""
        try:
            changes = await read_control_log(
                settings.kafka.bootstrap_servers, runtime.topics, runtime.control.trust
            )
        except (KafkaError, TimeoutError) as exc:
            log.error("control topic unreadable at start; every task goes to review: %s", exc)
            return
        for key, change in changes:
            control.follow(key, change)
        control.read()

    runtime.on_start.append(catch_up)
    topics = runtime.topics
    seen = SeenTasks(settings.dedupe_capacity, retention_s=settings.kafka.task_retention_ms / 1000)
    runtime.add_consumer(
        settings.group_id,
        [topics.scored],
        event_decoder({"tandem.task.scored.v1": TaskScored}),
        RouterHandler(control, topics, metrics, seen),
        state=SeenLog(settings.kafka, topics.scored, topics.router_seen, seen),
    )
    runtime.add_consumer(
        control_group,
        [runtime.topics.control],
        event_decoder(CONTROL_TYPES),
        TrustedControl(ControlFollower(control), runtime.control.trust),
    )
    return runtime.app("Tandem router", routers=[_policy_routes(control)])


def _policy_routes(control: RoutingControl) -> APIRouter:
    # Any valid token: the policy tells an attacker where automation draws its lines.
    router = APIRouter(prefix="/v1", tags=["policy"], dependencies=[Depends(authenticate)])

    @router.get("/policy", summary="The active routing policy")
    async def active_policy() -> dict[str, Any]:
        return control.policy.model_dump(mode="json")

    @router.get("/control", summary="What this replica follows: policy, kill switch, drift")
    async def control_state() -> dict[str, Any]:
        return {
            "policy": control.policy.ref.model_dump(),
            "kill_switch": control.kill_switch.model_dump(mode="json"),
            "drifting": control.drifting_features(),
            "control_unreadable": control.unreadable,
        }

    return router
