from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from tandem_shared.db import create_engine, session_factory, upgrade
from tandem_shared.envelope import utcnow
from tandem_shared.kafka import event_decoder
from tandem_shared.service import ServiceRuntime

from tandem_review_api import admin, errors, policies, web
from tandem_review_api.api import router
from tandem_review_api.consumer import ACCEPTED, QueueMaterializer
from tandem_review_api.reviews import ReviewService
from tandem_review_api.settings import ReviewApiSettings
from tandem_review_api.store import ReviewStore
from tandem_review_api.telemetry import ReviewMetrics

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ReviewApiSettings | None = None) -> FastAPI:
    settings = settings or ReviewApiSettings()
    runtime = ServiceRuntime("review-api", settings)
    engine = create_engine(settings.database_url)
    store = ReviewStore(session_factory(engine))
    metrics = ReviewMetrics(runtime.registry)
    reviews = ReviewService(
        store,
        runtime.publisher,
        runtime.topics,
        timedelta(seconds=settings.lease_seconds),
        runtime.tracer,
        metrics,
    )
    topics = runtime.topics
    runtime.add_consumer(
        settings.group_id,
        # Not the submitted topic: scoring owns its validation and dead-letters what is bad there.
        [topics.routed, topics.decisions],
        event_decoder(ACCEPTED),
        QueueMaterializer(store),
    )

    async def refresh_queue_depth() -> None:
        metrics.set_queue_depth(await store.queue_depth(utcnow()))

    async def handle_overdue() -> None:
        await reviews.handle_overdue()

    async def on_start() -> None:
        await upgrade(settings.database_url, MIGRATIONS)
        await refresh_queue_depth()

    async def on_stop() -> None:
        await engine.dispose()

    runtime.every(5, refresh_queue_depth, "refreshing the queue depth")
    runtime.every(settings.overdue_check_seconds, handle_overdue, "handling overdue reviews")

    runtime.on_start.append(on_start)
    runtime.on_stop.append(on_stop)
    app = runtime.app("Tandem review API", [router, admin.router, policies.router, web.router])
    app.state.store = store
    app.state.reviews = reviews
    app.state.review_metrics = metrics
    errors.install(app)
    return app
