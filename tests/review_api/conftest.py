"""The review API for a test, on each database: in-process, or served over HTTP on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from tandem_cli.stack.process import free_port
from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import review_api
from tests.service_utils import eventually


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
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    http = uvicorn.Server(config)
    serving = asyncio.create_task(http.serve())
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(ready, "the review API to serve")
    yield url
    http.should_exit = True
    await serving
