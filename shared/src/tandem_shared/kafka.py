"""What a service's handler sees and returns, and the asyncio producer of request paths.

A handler takes a batch and returns, for each record, either the events to publish or a
``Rejected`` naming why the record can never be processed; it raises ``TransientError`` when a
dependency is down. The consumer loop (loop.py) turns that into Kafka behaviour in one place.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from aiokafka import AIOKafkaProducer
from confluent_kafka import Message

from tandem_shared import clients
from tandem_shared.envelope import UNREADABLE_HEADERS, Event, Headers, decode
from tandem_shared.events import EventData
from tandem_shared.partitions import partition_indices
from tandem_shared.telemetry import trace_headers

if TYPE_CHECKING:
    from tandem_shared.settings import KafkaSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class Rejected(Exception):
    """This record can never be processed: dead-letter it with this reason and move on."""


class TransientError(Exception):
    """A dependency is unavailable: retry the batch with backoff until it is back."""


# Incoming, Outgoing and Record are made for every record: not frozen, like Event.
@dataclass(slots=True)
class Incoming(Generic[T]):
    item: T
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: Headers
    timestamp_ms: int
    value: bytes | None


@dataclass(slots=True)
class Outgoing:
    topic: str
    event: Event[Any]

    @property
    def key(self) -> bytes:
        return self.event.subject.encode()


@dataclass(slots=True)
class Consumed:
    """A record as fetched, whichever client fetched it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int  # ms since the epoch


def consumed(m: Message) -> Consumed:
    """A record fetched by librdkafka, as the handlers and decoders read it."""
    return Consumed(
        m.topic() or "",
        m.partition() or 0,
        m.offset() or 0,
        m.key(),
        m.value(),
        _headers(m),
        m.timestamp()[1],
    )


def _headers(m: Message) -> Headers:
    """A list of (name, bytes) pairs; a header without a value holds None, which every reader
    of headers (header_map) takes as empty. Header names that are not UTF-8 cannot be read:
    the record keeps one header saying so, and is dead-lettered for what it lacks."""
    try:
        return cast(Headers, _read_headers(m) or [])
    except (UnicodeDecodeError, SystemError):
        return [(UNREADABLE_HEADERS, b"a header name is not UTF-8")]


# The client returns from a header name it cannot decode with the error pending but not raised;
# the interpreter's fast path for a hot method call does not look, and a later, unrelated call
# fails instead. Called through methodcaller, whose own call checks, it raises here.
_read_headers = operator.methodcaller("headers")


# A handler's outputs are events, or records it made itself (state such as a changelog entry).
Result = Sequence["Outgoing | Record"] | Rejected
BatchHandler = Callable[[Sequence[Incoming[T]]], Awaitable[Sequence[Result]]]
Decoder = Callable[[Consumed], T]


def event_decoder(accepted: Mapping[str, type[EventData]]) -> Decoder[Event[EventData]]:
    """The strict decoder: a CloudEvent of one of the accepted types, or EnvelopeError."""

    def _decode(record: Consumed) -> Event[EventData]:
        return decode(record.value, record.headers, accepted)

    return _decode


def make_producer(kafka: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(**clients.aiokafka_producer(kafka, client_id))


class Publisher:
    """Sends events; ``flush`` waits until the broker acknowledged every one (acks=all).

    The producer can be attached later: aiokafka objects must be made inside a running loop,
    while services wire their parts together before it starts.
    """

    def __init__(self, producer: AIOKafkaProducer | None = None) -> None:
        self._producer = producer

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the publisher has no producer yet: the service has not started")
        return self._producer

    @producer.setter
    def producer(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    @staticmethod
    def record(outgoing: Outgoing) -> Record:
        """The record to send; the current span (the record being processed, or a request)
        continues in it."""
        headers = outgoing.event.headers() + trace_headers()
        return Record(outgoing.topic, outgoing.key, outgoing.event.value(), headers)

    async def send_records(self, records: Sequence[Record]) -> list[asyncio.Future[Any]]:
        """Send many records as a few batches, one per partition (as the producer would place
        each by its key), instead of one ``send`` each: per-record sends were a sixth of a
        service's time. Order within a partition is kept."""
        producer = self.producer
        by_topic: dict[str, list[Record]] = {}
        for r in records:
            by_topic.setdefault(r.topic, []).append(r)
        grouped: dict[tuple[str, int], list[Record]] = {}
        for topic, items in by_topic.items():
            partitions = sorted(await producer.partitions_for(topic))
            # Where the producer's default partitioner would put each, the keys hashed at once.
            chosen = partition_indices([r.key for r in items], len(partitions))
            for r, index in zip(items, chosen, strict=True):
                grouped.setdefault((topic, partitions[index]), []).append(r)
        futures: list[asyncio.Future[Any]] = []
        for (topic, partition), items in grouped.items():
            batch = producer.create_batch()
            for r in items:
                if batch.append(timestamp=None, key=r.key, value=r.value, headers=r.headers):
                    continue
                if batch.record_count():  # full: send it and start the next
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(timestamp=None, key=r.key, value=r.value, headers=r.headers):
                        continue
                # Larger than a batch on its own: the producer sends it alone.
                futures.append(
                    await producer.send(
                        topic, r.value, key=r.key, headers=r.headers, partition=partition
                    )
                )
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def publish(self, items: Sequence[Outgoing]) -> None:
        await self.flush(await self.send_records([self.record(o) for o in items]))

    @staticmethod
    async def flush(futures: Sequence[asyncio.Future[Any]]) -> None:
        if futures:
            await asyncio.gather(*futures)


@dataclass(slots=True)
class Record:
    """An event as the bytes sent: topic, key, value and headers; placed by its key unless a
    partition is given (state kept beside an input partition goes to the same number)."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int | None = None

    def size(self) -> int:
        """The bytes the record carries (the broker's framing adds a few dozen more)."""
        return len(self.key) + len(self.value) + sum(len(k) + len(v) for k, v in self.headers)
