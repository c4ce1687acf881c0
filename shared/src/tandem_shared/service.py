"""The shape every service shares: a FastAPI app with /healthz, /readyz and /metrics whose
lifespan starts the Kafka producer and the service's consumer loops and stops them on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from tandem_shared.control_signing import ControlKeys
from tandem_shared.heap import freeze_startup_objects, thaw
from tandem_shared.kafka import BatchHandler, Decoder, Publisher, make_producer
from tandem_shared.limits import BodyLimits
from tandem_shared.logging import setup_logging
from tandem_shared.loop import ConsumerLoop, LoopConfig, PartitionState
from tandem_shared.settings import ServiceSettings
from tandem_shared.telemetry import (
    CallerTrace,
    PipelineMetrics,
    recording,
    setup_tracing,
    shutdown_tracing,
)
from tandem_shared.topics import Topics

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
S = TypeVar("S", bound=ServiceSettings)


@dataclass
class _ConsumerSpec:
    group_id: str
    topics: Sequence[str]
    decoder: Decoder[Any]
    handler: BatchHandler[Any]
    state: PartitionState | None = None
    gates_readiness: bool = True


@dataclass
class ServiceRuntime:
    """Owns what a service shares with the others; the service adds consumers and routes."""

    name: str
    settings: ServiceSettings
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    # More that /readyz asks, such as "the database answers"; each must not raise.
    readiness: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topics = Topics(self.settings.kafka.topic_prefix)
        self.metrics = PipelineMetrics(self.registry, self.name)
        self.tracer = setup_tracing(self.name)
        self.publisher = Publisher()  # its producer is made in start(), inside the loop
        # Whose control changes this process follows, and the key it signs its own with.
        self.control = ControlKeys.from_settings(self.settings.runtime)
        refused = self.metrics.control_refused
        self.control.trust.on_refused = lambda reason: refused.labels(self.name, reason).inc()
        self._consumers: list[_ConsumerSpec] = []
        self._loops: list[ConsumerLoop[Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._producer_started = False
        self._periodic: list[tuple[float, Hook, str]] = []

    def add_consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        decoder: Decoder[Any],
        handler: BatchHandler[Any],
        state: PartitionState | None = None,
        gates_readiness: bool = True,
    ) -> None:
        """A consumer loop of the service. ``gates_readiness``: /readyz is false while this loop
        retries an outage. A service whose requests do not need the loop (the review API serves
        people from its database while Kafka is down) says False; a loop that ended still
        fails /healthz."""
        self._consumers.append(
            _ConsumerSpec(group_id, topics, decoder, handler, state, gates_readiness)
        )

    def every(self, seconds: float, job: Hook, what: str) -> None:
        """Run ``job`` every ``seconds`` while the service runs; a failed round is logged and
        the next one comes as usual (an outage of the database or broker passes)."""
        self._periodic.append((seconds, job, what))

    async def _repeat(self, seconds: float, job: Hook, what: str) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
                return
            try:
                await job()
            except Exception:
                log.warning("%s failed; trying again in %.0f s", what, seconds, exc_info=True)

    def last_fetch(self, group_id: str) -> float | None:
        """When the consumer of ``group_id`` last heard from the broker (see ConsumerLoop)."""
        for spec, loop in zip(self._consumers, self._loops, strict=False):
            if spec.group_id == group_id:
                return loop.last_fetch()
        return None

    @property
    def ready(self) -> bool:
        return (
            self._producer_started
            and len(self._loops) == len(self._consumers)
            and all(
                loop.ready
                for spec, loop in zip(self._consumers, self._loops, strict=True)
                if spec.gates_readiness
            )
        )

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self.publisher.producer = make_producer(
            self.settings.kafka, client_id=f"tandem-{self.name}"
        )
        await self.publisher.producer.start()
        self._producer_started = True
        for hook in self.on_start:
            await hook()
        freeze_startup_objects()
        for seconds, job, what in self._periodic:
            self._tasks.append(asyncio.create_task(self._repeat(seconds, job, what), name=what))
        for spec in self._consumers:
            config = LoopConfig(
                service=self.name,
                dead_letter_topic=self.topics.deadletter,
                max_records=self.settings.batch_max_records,
                slice_records=self.settings.batch_slice_records,
                timeout_ms=self.settings.batch_timeout_ms,
                max_attempts=self.settings.max_attempts,
                backoff_s=self.settings.retry_backoff_s,
                transaction_timeout_ms=self.settings.transaction_timeout_ms,
                commit_interval_ms=self.settings.commit_interval_ms,
                instance_id=self.settings.runtime.instance_id,
            )
            loop = ConsumerLoop(
                self.settings.kafka,
                spec.group_id,
                spec.topics,
                spec.decoder,
                spec.handler,
                config,
                self.metrics,
                self.tracer,
                state=spec.state,
            )
            self._loops.append(loop)
            self._loop_tasks.append(
                asyncio.create_task(self._run(loop, spec.group_id), name=spec.group_id)
            )
        self._tasks.extend(self._loop_tasks)

    async def _run(self, loop: ConsumerLoop[Any], group_id: str) -> None:
        running = self.metrics.loop_running.labels(self.name, group_id)
        running.set(1)
        try:
            await loop.run(self._stop)
        except Exception:
            log.exception("consumer loop crashed; the service is no longer healthy")
            raise
        finally:
            loop.ready = False
            running.set(0)

    @property
    def healthy(self) -> bool:
        """False once a consumer loop ended while the service was not stopping: a process
        whose loop died must be restarted, not left serving /healthz as a zombie."""
        return self._stop.is_set() or not any(t.done() for t in self._loop_tasks)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for hook in self.on_stop:
            await hook()
        await self.publisher.producer.stop()
        self._producer_started = False
        shutdown_tracing()
        thaw()

    def app(self, title: str, routers: Sequence[Any] = ()) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        # Outside development the API's description is not served: it maps every route for
        # whoever asks. Each service's document is in docs/ and in app.openapi().
        described = self.settings.runtime.env == "development"
        app = FastAPI(
            title=title,
            lifespan=lifespan,
            docs_url="/docs" if described else None,
            redoc_url="/redoc" if described else None,
            openapi_url="/openapi.json" if described else None,
        )
        app.state.runtime = self
        # A body too large or too deep is refused before auth or any route reads it.
        app.add_middleware(
            BodyLimits,
            max_bytes=self.settings.max_body_bytes,
            max_depth=self.settings.max_json_depth,
        )

        @app.get("/healthz", include_in_schema=False)
        async def healthz(response: Response) -> dict[str, str]:
            if not self.healthy:
                response.status_code = 503
                return {"status": "a consumer loop stopped"}
            return {"status": "ok"}

        @app.get("/readyz", include_in_schema=False)
        async def readyz(response: Response) -> dict[str, str]:
            if not self.ready or not all([await check() for check in self.readiness]):
                response.status_code = 503
                return {"status": "starting"}
            return {"status": "ready"}

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        @app.exception_handler(RequestValidationError)
        async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
            """422 naming what is wrong where, without echoing the input: a hostile value
            (a lone surrogate) cannot even be written back as JSON."""
            errors = [
                {"type": e["type"], "loc": list(e["loc"]), "msg": str(e["msg"])}
                for e in exc.errors()
            ]
            return JSONResponse(status_code=422, content={"detail": errors})

        for router in routers:
            app.include_router(router)
        if recording():
            FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
        else:
            app.add_middleware(CallerTrace)
        return app


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service in the foreground; uvicorn turns SIGTERM into a graceful lifespan stop."""
    setup_logging(settings.runtime.log_level, settings.runtime.log_json)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


def main(
    name: str,
    settings_type: Callable[[], S],
    create_app: Callable[[S], FastAPI],
    refuse: tuple[type[Exception], ...] = (),
) -> None:
    """The entry point of every service: a bad setting, model or policy ends it with one line
    naming the problem (exit 1), never a traceback."""
    refused: tuple[type[Exception], ...] = (ValidationError, *refuse)
    try:
        settings = settings_type()
        app = create_app(settings)
    except refused as exc:
        raise SystemExit(f"{name}: {exc}") from None
    # What start-up made (modules, schemas, models) lives as long as the process: keep it out
    # of the collector's full passes, which would otherwise stall a batch for tens of ms.
    gc.collect()
    gc.freeze()
    serve(app, settings)
