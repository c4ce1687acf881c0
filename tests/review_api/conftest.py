"""The review API for a test, on each database: in-process, or served over HTTP on a free port;
or its parts, wired as the app wires them, without Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import Parts, review_api, review_parts, served_review_api


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
    async with served_review_api(kafka_settings, database_url) as url:
        yield url


@pytest.fixture
async def parts(database_url: str) -> AsyncIterator[Parts]:
    async with review_parts(database_url) as wired:
        yield wired
