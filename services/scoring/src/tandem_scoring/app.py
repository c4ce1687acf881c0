"""The scoring service: consume submitted tasks, score them with ONNX models, emit scored events."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI
from tandem_shared.events import TaskSubmitted
from tandem_shared.kafka import event_decoder
from tandem_shared.service import ServiceRuntime

from tandem_scoring.consumer import ScoringHandler
from tandem_scoring.registry import ModelRegistry
from tandem_scoring.scorer import Scorer
from tandem_scoring.settings import ScoringSettings
from tandem_scoring.telemetry import ScoringMetrics

log = logging.getLogger(__name__)


def create_app(settings: ScoringSettings | None = None) -> FastAPI:
    """Raises ModelError, before anything starts, when a model cannot be served."""
    settings = settings or ScoringSettings()
    # Loaded before the app exists, so the service is never up, let alone ready, without them.
    registry = ModelRegistry.load(settings.models_dir, settings.serve, settings.inference_threads)
    for task_type, model in sorted(registry.task_types.items()):
        log.info("task type %s is scored by %s", task_type, model.key)
    runtime = ServiceRuntime("scoring", settings)
    metrics = ScoringMetrics(runtime.registry)
    scorer = Scorer(registry, observe=metrics.observe_inference)
    runtime.add_consumer(
        settings.group_id,
        [runtime.topics.submitted],
        event_decoder({"tandem.task.submitted.v1": TaskSubmitted}),
        ScoringHandler(scorer, runtime.topics, metrics),
    )
    return runtime.app("Tandem scoring", [_models_router(registry)])


def _models_router(registry: ModelRegistry) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["models"])

    @router.get("/models")
    async def models() -> list[dict[str, Any]]:
        """The models being served, with the task types each scores and its training metrics."""
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
