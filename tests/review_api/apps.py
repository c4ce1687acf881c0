"""The review API in-process for a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_shared.settings import KafkaSettings

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
