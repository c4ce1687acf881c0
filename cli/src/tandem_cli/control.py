"""A producer on the pipeline's control topic for one command, and who the command acts as."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tandem_shared.control_signing import ControlKeys
from tandem_shared.kafka import Publisher, make_producer
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics


@asynccontextmanager
async def control_publisher() -> AsyncIterator[tuple[KafkaSettings, Topics, Publisher]]:
    """The Kafka settings of the environment (TANDEM_KAFKA_*), their topics, and a publisher."""
    kafka = KafkaSettings()
    producer = make_producer(kafka, client_id="tandem-cli")
    await producer.start()
    try:
        yield kafka, Topics(kafka.topic_prefix), Publisher(producer)
    finally:
        await producer.stop()


def keys() -> ControlKeys:
    """The keys of the environment: TANDEM_CONTROL_SIGNING_KEY signs what a command publishes,
    TANDEM_CONTROL_TRUSTED_KEYS says whose changes it reads as the current state."""
    return ControlKeys.from_settings(RuntimeSettings())


def who() -> str:
    """The author a change records: the local user."""
    return os.environ.get("USER") or "cli"
