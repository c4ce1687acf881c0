"""Running a service in-process for a test, and reading a consumer group's progress."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from tandem_cli.stack.process import free_port
from tandem_shared.auth import mint_token
from tandem_shared.control_signing import ControlTrust
from tandem_shared.kafka import Outgoing, Publisher, make_producer
from tandem_shared.settings import KafkaSettings, RuntimeSettings

# What a development process trusts with no control keys configured: every change.
OPEN_TRUST = ControlTrust({}, open=True)


def bearer(*roles: str, subject: str = "tester") -> dict[str, str]:
    """The Authorization header of a development token with these roles."""
    return {"Authorization": f"Bearer {mint_token(RuntimeSettings(), subject, list(roles))}"}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The service's lifespan, a client for its API, and its readiness waited for."""
    transport = httpx.ASGITransport(app=app)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=30),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, f"{app.title} to be ready")
        yield client


async def committed(kafka: KafkaSettings, group: str, topics: Sequence[str]) -> int:
    """The sum of a group's committed offsets over the topics' partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group)
    await consumer.start()
    try:
        total = 0
        for topic in topics:
            for p in range(kafka.partitions):
                total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def publish_events(kafka: KafkaSettings, outgoing: Sequence[Outgoing]) -> None:
    """Publish events as a Tandem service does (CloudEvents headers, keyed by task)."""
    producer = make_producer(kafka, "tests")
    await producer.start()
    try:
        await Publisher(producer).publish(outgoing)
    finally:
        await producer.stop()


def failures(metrics: str) -> list[str]:
    """Samples of failed handler attempts or dead letters above zero."""
    return [
        line
        for line in metrics.splitlines()
        if line.startswith(("tandem_messages_failed_total{", "tandem_deadletters_total{"))
        and float(line.rsplit(" ", 1)[1]) > 0
    ]


@asynccontextmanager
async def serving(app: FastAPI, what: str) -> AsyncIterator[str]:
    """``app`` served over HTTP on a free port of 127.0.0.1 until the block ends; its URL, once
    /readyz answers 200."""
    port = free_port()
    http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(http.serve())
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await eventually(ready, f"{what} to serve")
        yield url
    finally:
        http.should_exit = True
        await task
