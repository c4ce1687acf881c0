"""The review API for a test, on each database: in-process, or served over HTTP on a free port;
or its parts, wired as the app wires them, without Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import Parts, review_api, review_parts
from tests.service_utils import serving


@pytest.fixture
async def api(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with review_api(kafka_settings, database_url) as (client, _):
        yield client


@pytest.fixture
async def server(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> AsyncIterator[str]:
    settings = ReviewApiSettings(
        kafka=kafka_settings,
        database_url=database_url,
        batch_timeout_ms=50,
        events_poll_seconds=0.1,
        overdue_check_seconds=3600,
    )
    async with serving(create_app(settings), "the review API") as url:
        yield url


@pytest.fixture
async def parts(database_url: str) -> AsyncIterator[Parts]:
    async with review_parts(database_url) as wired:
        yield wired
