"""Server-sent events of the queue, through a real HTTP server: a console sees reviews arrive,
get claimed and decided without polling, and a reconnect with Last-Event-ID misses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.test_api import auth, publish_routed, routed
from tests.service_utils import eventually

pytestmark = pytest.mark.kafka
READER = auth("ana", "reviewer")
AUDITOR = auth("ivy", "auditor")


class Listener:
    """Collects the events of one open stream: (id, kind, data)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.ended = False

    async def listen(self, url: str, headers: dict[str, str]) -> None:
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream("GET", f"{url}/v1/reviews/events", headers=headers) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            event_id, kind, data = "", "", ""
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    self.events.append((event_id, kind, json.loads(data)))
                    event_id, kind, data = "", "", ""
        self.ended = True

    @contextlib.asynccontextmanager
    async def listening(self, url: str, headers: dict[str, str]) -> AsyncIterator[None]:
        """The stream open while the block runs, closed however it ends (a stream left open
        would hold the server's shutdown)."""
        task = asyncio.create_task(self.listen(url, headers))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def states(self, task_id: str) -> list[str]:
        return [
            e["status"]
            for _, kind, e in self.events
            if kind == "review" and e["task_id"] == task_id
        ]


async def test_a_console_sees_each_change_and_resumes_where_it_left(
    server: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    first = Listener()
    async with first.listening(server, READER):
        await publish_routed(kafka_settings, topics, [routed("live-1")])

        async def seen(status: str) -> bool:
            return status in first.states("live-1")

        await eventually(lambda: seen("pending"), "the new review on the stream", timeout=30)
        review_id = first.events[-1][2]["review_id"]
        async with httpx.AsyncClient(base_url=server) as client:
            await client.post(f"/v1/reviews/{review_id}/claim", headers=READER)
            await eventually(lambda: seen("claimed"), "the claim on the stream", timeout=30)
    last_id = first.events[-1][0]
    async with httpx.AsyncClient(base_url=server) as client:
        body = {"outcome": "malignant", "rationale": "irregular border"}
        decided = await client.post(f"/v1/reviews/{review_id}/decision", json=body, headers=READER)
        assert decided.status_code == 200, decided.text

    # Reconnecting with the last id it saw, a console gets what happened meanwhile (an
    # auditor's: a decided review is no reviewer's to see).
    second = Listener()
    async with second.listening(server, {**AUDITOR, "Last-Event-ID": last_id}):

        async def caught_up() -> bool:
            return second.states("live-1") == ["decided"]

        await eventually(caught_up, "the decision after reconnecting", timeout=30)
    assert first.states("live-1") == ["pending", "claimed"]
