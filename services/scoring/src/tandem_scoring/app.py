"""The scoring service: consume submitted tasks, score them with ONNX models, emit scored events."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from tandem_shared.auth import authenticate
from tandem_shared.control import CONTROL_TYPES, read_control
from tandem_shared.control_signing import TrustedControl
from tandem_shared.events import TaskSubmitted
from tandem_shared.kafka import event_decoder
from tandem_shared.service import ServiceRuntime

from tandem_scoring.consumer import ScoringHandler
from tandem_scoring.drift import DriftWatch
from tandem_scoring.settings import ScoringSettings
from tandem_scoring.telemetry import ScoringMetrics
from tandem_scoring.versions import ControlHandler, LiveModels

log = logging.getLogger(__name__)


def create_app(settings: ScoringSettings | None = None) -> FastAPI:
    """Raises ModelError, before anything starts, when a model cannot be served."""
    settings = settings or ScoringSettings()
    # Loaded before the app exists, so the service is never up, let alone ready, without them.
    live = LiveModels.load(settings.models_dir, settings.serve, settings.inference_threads)
    for task_type, model in sorted(live.registry.task_types.items()):
        log.info("task type %s is scored by %s", task_type, model.key)
    runtime = ServiceRuntime("scoring", settings)
    metrics = ScoringMetrics(runtime.registry)
    control = ControlHandler(live, metrics)

    async def catch_up() -> None:
        """Apply the versions the control topic holds before the first task is scored."""
        changes = await read_control(
            settings.kafka.bootstrap_servers, runtime.topics, runtime.control.trust
        )
        for change in changes.values():
            await control.follow(change)

    runtime.on_start.append(catch_up)
    runtime.add_consumer(
        settings.group_id,
        [runtime.topics.submitted],
        event_decoder({"tandem.task.submitted.v1": TaskSubmitted}),
        ScoringHandler(
            live,
            runtime.topics,
            metrics,
            DriftWatch(settings.drift_window, settings.drift_threshold, settings.drift_min_count),
            thread_min_batch=settings.thread_min_batch,
            signer=runtime.control.signer,
        ),
    )
    # Every replica follows every control change: a group of its own, read from the start.
    runtime.add_consumer(
        f"{settings.group_id}-control-{uuid.uuid4().hex[:12]}",
        [runtime.topics.control],
        event_decoder(CONTROL_TYPES),
        TrustedControl(control, runtime.control.trust),
    )
    return runtime.app("Tandem scoring", [_models_router(live)])


def _models_router(live: LiveModels) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(authenticate)])

    @router.get("/models")
    async def models() -> list[dict[str, Any]]:
        """The models being served, with the task types each scores and its training metrics."""
        registry = live.registry
        served = registry.task_types
        return [
            {
                "name": m.manifest.name,
                "version": m.manifest.version,
                "task_types": sorted(t for t, s in served.items() if s.key == m.key),
                "features": [f.name for f in m.manifest.ordered_features],
                "labels": m.manifest.labels,
                "metrics": m.manifest.metrics.model_dump(),
                "dataset_fingerprint": m.manifest.dataset.fingerprint,
                "created_at": m.manifest.created_at,
            }
            for m in registry.models
        ]

    return router
