"""The review API for a test: in-process, served over HTTP (with the audit API it reads task
history from, where asked), or its parts without Kafka."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from tandem_audit_sink.app import create_app as audit_app
from tandem_audit_sink.settings import AuditSettings
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

from tests.service_utils import running, serving


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


@asynccontextmanager
async def served_review_api(
    kafka: KafkaSettings, database_url: str, **changes: Any
) -> AsyncIterator[str]:
    """The review API over HTTP on a free port, quick to follow Kafka and its live stream; its
    URL."""
    settings = ReviewApiSettings(
        kafka=kafka,
        database_url=database_url,
        batch_timeout_ms=50,
        events_poll_seconds=0.1,
        overdue_check_seconds=3600,
        **changes,
    )
    async with serving(create_app(settings), "the review API") as url:
        yield url


@asynccontextmanager
async def audit_api(kafka: KafkaSettings, folder: Path, **changes: Any) -> AsyncIterator[str]:
    """The audit sink over HTTP on a free port, its ledger on SQLite in ``folder``; its URL."""
    ledger = AuditSettings(
        kafka=kafka,
        database_url=f"sqlite+aiosqlite:///{folder / 'audit.db'}",
        group_id=f"audit-{uuid.uuid4().hex}",
        batch_timeout_ms=50,
        **changes,
    )
    async with serving(audit_app(ledger), "the audit API") as url:
        yield url


@asynccontextmanager
async def audited_review_api(
    kafka: KafkaSettings, database_url: str, folder: Path, **audit: Any
) -> AsyncIterator[tuple[str, str]]:
    """The review API and the audit API it reads task history from, both over HTTP; their
    URLs. ``audit``: settings of the audit sink's own."""
    async with (
        audit_api(kafka, folder, **audit) as audit_url,
        served_review_api(kafka, database_url, audit_url=audit_url) as url,
    ):
        yield url, audit_url


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
