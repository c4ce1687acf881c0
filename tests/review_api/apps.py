"""The review API in-process for a test, or its parts without Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from tandem_review_api.app import MIGRATIONS, create_app
from tandem_review_api.database import review_engines
from tandem_review_api.outbox import Outbox
from tandem_review_api.queue import ClaimLimits
from tandem_review_api.reviews import ReviewService
from tandem_review_api.settings import ReviewApiSettings
from tandem_review_api.store import ReviewStore
from tandem_review_api.telemetry import ReviewMetrics
from tandem_shared.db import upgrade
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.service_utils import running


@asynccontextmanager
async def review_api(
    kafka: KafkaSettings, database_url: str, **changes: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The review API in-process, with settings of a test's own, and a client of it."""
    settings = ReviewApiSettings(
        kafka=kafka,
        database_url=database_url,
        batch_timeout_ms=50,
        # The tasks here were due at fixed times now past: overdue handling is tested apart.
        overdue_check_seconds=3600,
        **changes,
    )
    app = create_app(settings)
    async with running(app) as client:
        yield client, app


@dataclass
class Parts:
    store: ReviewStore
    outbox: Outbox
    reviews: ReviewService
    metrics: ReviewMetrics
    topics: Topics


@asynccontextmanager
async def review_parts(database_url: str) -> AsyncIterator[Parts]:
    """The store, outbox and review service on a migrated database, wired as the app wires
    them (its engines included), without Kafka or HTTP."""
    await upgrade(database_url, MIGRATIONS)
    engines = review_engines(database_url, connections=4)
    store = ReviewStore(engines.transactions, engines.statements)
    outbox = Outbox(engines.transactions, max_record_bytes=20_000, statements=engines.statements)
    metrics = ReviewMetrics(CollectorRegistry())
    topics = Topics("t.")
    limits = ClaimLimits(timedelta(minutes=5), timedelta(hours=1), per_reviewer=5)
    reviews = ReviewService(store, outbox, topics, limits, trace.get_tracer("tests"), metrics)
    try:
        yield Parts(store, outbox, reviews, metrics, topics)
    finally:
        await engines.dispose()
