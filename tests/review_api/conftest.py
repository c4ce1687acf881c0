"""The review API in-process for a test, on each database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.service_utils import running


@pytest.fixture
async def api(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = ReviewApiSettings(
        kafka=kafka_settings,
        database_url=database_url,
        batch_timeout_ms=50,
        # The tasks here were due at fixed times now past: overdue handling is tested apart.
        overdue_check_seconds=3600,
    )
    async with running(create_app(settings)) as client:
        yield client
