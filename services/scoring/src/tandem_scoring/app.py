"""The scoring service: consume submitted tasks, score them with ONNX models, emit scored events."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from tandem_shared.auth import authenticate
from tandem_shared.control import CONTROL_TYPES, read_control
from tandem_shared.control_signing import TrustedControl, signed
from tandem_shared.drift_votes import DriftVote
from tandem_shared.envelope import utcnow
from tandem_shared.events import TaskSubmitted
from tandem_shared.kafka import Outgoing, event_decoder
from tandem_shared.service import ServiceRuntime

from tandem_scoring.consumer import ScoringHandler
from tandem_scoring.drift import DriftWatch, drift_control_event
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

    drift = DriftWatch(settings.drift_window, settings.drift_threshold, settings.drift_min_count)
    # Its name in its drift votes: the pod's (TANDEM_INSTANCE_ID), so a restart takes its
    # alarms back; else one of this process alone.
    replica = settings.runtime.instance_id or f"{socket.gethostname()}-{os.getpid()}"

    async def catch_up() -> None:
        """Apply the versions the control topic holds before the first task is scored, and
        take back the drift alarms this replica voted for before a restart."""
        changes = await read_control(
            settings.kafka.bootstrap_servers, runtime.topics, runtime.control.trust
        )
        for change in changes.values():
            await control.follow(change)
            vote = DriftVote.of(change)
            if vote is not None and vote.replica == replica and vote.drifting:
                drift.inherit(vote.model, vote.version, vote.feature, vote.psi)

    async def repeat_alarms() -> None:
        """Say this replica's alarms again: a vote not repeated runs out (drift_votes)."""
        now = utcnow()
        events = [
            signed(drift_control_event(c, "scoring", now, replica), runtime.control.signer)
            for c in drift.alarms()
        ]
        if events:
            await runtime.publisher.publish([Outgoing(runtime.topics.control, e) for e in events])

    runtime.on_start.append(catch_up)
    runtime.every(settings.drift_refresh_seconds, repeat_alarms, "repeating drift alarms")
    runtime.add_consumer(
        settings.group_id,
        [runtime.topics.submitted],
        event_decoder({"tandem.task.submitted.v1": TaskSubmitted}),
        ScoringHandler(
            live,
            runtime.topics,
            metrics,
            drift,
            thread_min_batch=settings.thread_min_batch,
            signer=runtime.control.signer,
            replica=replica,
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
