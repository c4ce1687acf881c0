"""Server-sent events of the queue, through a real HTTP server: a console sees reviews arrive,
get claimed and decided without polling, and a reconnect with Last-Event-ID misses nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.test_api import auth, publish_routed, routed
from tests.service_utils import eventually

pytestmark = pytest.mark.kafka
READER = auth("ana", "reviewer")


class Listener:
    """Collects the review events of one open stream."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def listen(self, url: str, headers: dict[str, str]) -> None:
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream("GET", f"{url}/v1/reviews/events", headers=headers) as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            event_id, data = "", ""
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    self.events.append((event_id, json.loads(data)))
                    event_id, data = "", ""

    def states(self, task_id: str) -> list[str]:
        return [e["status"] for _, e in self.events if e["task_id"] == task_id]


async def test_a_console_sees_each_change_and_resumes_where_it_left(
    server: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    first = Listener()
    watching = asyncio.create_task(first.listen(server, READER))
    await publish_routed(kafka_settings, topics, [routed("live-1")])

    async def seen(status: str) -> bool:
        return status in first.states("live-1")

    await eventually(lambda: seen("pending"), "the new review on the stream", timeout=30)
    review_id = first.events[-1][1]["review_id"]
    async with httpx.AsyncClient(base_url=server) as client:
        await client.post(f"/v1/reviews/{review_id}/claim", headers=READER)
        await eventually(lambda: seen("claimed"), "the claim on the stream", timeout=30)
        watching.cancel()
        last_id = first.events[-1][0]
        body = {"outcome": "malignant", "rationale": "irregular border"}
        decided = await client.post(f"/v1/reviews/{review_id}/decision", json=body, headers=READER)
        assert decided.status_code == 200, decided.text

    # Reconnecting with the last id it saw, the console gets what happened meanwhile.
    second = Listener()
    resumed = asyncio.create_task(second.listen(server, {**READER, "Last-Event-ID": last_id}))

    async def caught_up() -> bool:
        return second.states("live-1") == ["decided"]

    await eventually(caught_up, "the decision after reconnecting", timeout=30)
    resumed.cancel()
    assert first.states("live-1") == ["pending", "claimed"]
