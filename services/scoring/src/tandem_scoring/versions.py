"""Live model versions: the registry in use is replaced whole when a control event changes which
version of a model scores. A batch keeps the registry it started with; a version that fails to
load is refused and the one in use stays."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError
from tandem_shared.control import ModelState
from tandem_shared.envelope import Event
from tandem_shared.events import ControlChanged, EventData
from tandem_shared.kafka import Incoming, Result

from tandem_scoring.registry import ModelError, ModelRegistry, read_manifest
from tandem_scoring.telemetry import ScoringMetrics

log = logging.getLogger(__name__)


class LiveModels:
    def __init__(self, registry: ModelRegistry, models_dir: Path, threads: int = 1) -> None:
        self.models_dir = models_dir
        self.threads = threads
        self.registry = registry
        self.serve = {t: m.key for t, m in registry.task_types.items()}
        self.shadow: ModelRegistry | None = None  # candidates scoring beside the live versions
        self._shadow_serve: dict[str, str] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, models_dir: Path, serve: Mapping[str, str], threads: int) -> LiveModels:
        return cls(ModelRegistry.load(models_dir, serve, threads), models_dir, threads)

    def state_of(self, name: str) -> str | None:
        """The version of ``name`` scoring now, if it serves anything."""
        versions = {m.manifest.version for m in self.registry.models if m.manifest.name == name}
        return next(iter(versions)) if len(versions) == 1 else None

    async def apply(self, name: str, state: ModelState) -> bool:
        """Make ``state.live`` the version of ``name``; False if it was refused. A replica that
        starts after a refused change falls back to ``state.previous``, as running ones kept it."""
        async with self._lock:  # one change at a time, in the order the topic gives them
            switched = await self._switch(name, state.live)
            if not switched and state.previous and self.state_of(name) != state.previous:
                await self._switch(name, state.previous)
            shadow = state.shadow if state.shadow != self.state_of(name) else None
            return await self._shadow(name, shadow) and switched

    async def _shadow(self, name: str, version: str | None) -> bool:
        serve = {t: k for t, k in self._shadow_serve.items() if not k.startswith(f"{name}/")}
        if version is not None:
            try:
                manifest = await asyncio.to_thread(read_manifest, self.models_dir / name / version)
            except ModelError as exc:
                log.error("shadow %s version %s refused: %s", name, version, exc)
                return False
            serve |= dict.fromkeys(manifest.task_types, f"{name}/{version}")
        if serve == self._shadow_serve:
            return True
        try:
            shadow = (
                await asyncio.to_thread(ModelRegistry.load, self.models_dir, serve, self.threads)
                if serve
                else None
            )
        except ModelError as exc:
            log.error("shadow %s version %s refused: %s", name, version, exc)
            return False
        self.shadow, self._shadow_serve = shadow, serve
        log.info("model %s shadow: %s", name, version or "none")
        return True

    async def _switch(self, name: str, version: str) -> bool:
        if self.state_of(name) == version:
            return True
        try:
            registry, serve = await asyncio.to_thread(self._load, name, version)
        except ModelError as exc:
            kept = self.state_of(name)
            log.error("model %s version %s refused, keeping %s: %s", name, version, kept, exc)
            return False
        self.registry, self.serve = registry, serve  # one assignment: batches see old or new
        log.info("model %s now scores with version %s", name, version)
        return True

    def _load(self, name: str, version: str) -> tuple[ModelRegistry, dict[str, str]]:
        directory = self.models_dir / name / version
        manifest = read_manifest(directory)
        serve = {t: key for t, key in self.serve.items() if not key.startswith(f"{name}/")}
        serve |= dict.fromkeys(manifest.task_types, f"{name}/{version}")
        registry = ModelRegistry.load(self.models_dir, serve, self.threads)
        return registry, {t: m.key for t, m in registry.task_types.items()}


class ControlHandler:
    """Follows the control topic; only model changes concern scoring."""

    def __init__(self, live: LiveModels, metrics: ScoringMetrics) -> None:
        self.live = live
        self.metrics = metrics

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        for item in batch:
            await self.follow(item.item.data)
        return [[] for _ in batch]

    async def follow(self, change: EventData) -> None:
        if not isinstance(change, ControlChanged) or change.kind != "model":
            return
        try:
            state = ModelState.model_validate(change.value)
        except ValidationError as exc:
            log.error("control change for model %s is not a model state: %s", change.name, exc)
            return
        if not await self.live.apply(change.name, state):
            self.metrics.model_refused.labels(change.name).inc()
