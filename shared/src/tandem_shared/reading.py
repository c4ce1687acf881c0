"""Reading a topic back, without a consumer group: from the start or a time, to a time or to
the end as it is when the read begins. For start-up state, what-ifs and exports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioPartition
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from tandem_shared import clients
from tandem_shared.envelope import EnvelopeError, Event, decode
from tandem_shared.events import EventData
from tandem_shared.kafka import Consumed, consumed
from tandem_shared.settings import KafkaSettings

READ_TIMEOUT_S = 120.0


async def read_events(
    bootstrap_servers: str,
    topic: str,
    accepted: Mapping[str, type[EventData]],
    keep: Callable[[Event[EventData]], None],
    since: datetime | None = None,
    until: datetime | None = None,
    timeout_s: float = READ_TIMEOUT_S,
) -> None:
    """Every valid event of ``topic`` appended in [since, until) (the whole topic by default),
    in partition order; a record that is not a valid event of an accepted type is skipped, as
    the consumers dead-lettered it."""

    def event(record: Consumed) -> None:
        try:
            keep(decode(record.value, record.headers, accepted))
        except EnvelopeError:
            return

    await read_records(bootstrap_servers, topic, event, since, until, timeout_s)


async def read_records(
    bootstrap_servers: str,
    topic: str,
    keep: Callable[[Consumed], None],
    since: datetime | None = None,
    until: datetime | None = None,
    timeout_s: float = READ_TIMEOUT_S,
) -> None:
    """Every committed record of ``topic`` appended in [since, until), to the end of each
    partition as it is when the read begins, handed to ``keep`` on the event loop. On
    librdkafka, like the services' loops: a record aiokafka cannot parse (a header name that is
    not UTF-8) is read like any other."""
    reader = _Reader(KafkaSettings(bootstrap_servers=bootstrap_servers), topic, since, until)
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.to_thread(reader.open)
            while not reader.done:
                for record in await asyncio.to_thread(reader.read):
                    keep(record)
    except KafkaException as exc:
        # Raised as the Kafka error the request paths already answer (503) or wait out.
        raise KafkaConnectionError(f"cannot read {topic}: {exc}") from exc
    finally:
        await asyncio.to_thread(reader.close)


_NOT_YET = {
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
}


class _Reader:
    """The blocking part of read_records, run on a worker thread a call at a time."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, since: datetime | None, until: datetime | None
    ) -> None:
        self.topic = topic
        self.consumer = Consumer(clients.state_reader(kafka))
        self.since_ms = int(since.timestamp() * 1000) if since is not None else None
        self.until_ms = int(until.timestamp() * 1000) if until is not None else None
        self.end: dict[int, int] = {}  # the offset each partition is read up to
        self.done = False

    def open(self, settle_s: float = 10.0) -> None:
        """Assign what there is to read. A topic just made has no leader for a moment: what
        says so is tried again, for ``settle_s``."""
        deadline = time.monotonic() + settle_s
        while True:
            try:
                self._open()
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                settling = error.retriable() or error.code() in _NOT_YET
                if not settling or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _open(self) -> None:
        metadata = self.consumer.list_topics(self.topic, timeout=10)
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            raise KafkaException(found.error if found else KafkaError._UNKNOWN_TOPIC)
        start: list[TopicPartition] = []
        for p in sorted(found.partitions):
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=10
            )
            if high > low:
                self.end[p] = high
                start.append(TopicPartition(self.topic, p, OFFSET_BEGINNING))
        if self.since_ms is not None and start:
            for tp in start:
                tp.offset = self.since_ms
            found_at = self.consumer.offsets_for_times(start, timeout=10)
            start = [tp for tp in found_at if 0 <= tp.offset < self.end[tp.partition]]
        for p in self.end.keys() - {tp.partition for tp in start}:
            del self.end[p]
        self.done = not start
        if start:
            self.consumer.assign(start)

    def read(self) -> list[Consumed]:
        out: list[Consumed] = []
        for m in self.consumer.consume(1000, 0.5):
            error = m.error()
            partition = m.partition() or 0
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                self._finish(partition)  # the end of what is committed now
                continue
            if partition not in self.end:
                continue
            record = consumed(m)
            past_until = self.until_ms is not None and record.timestamp >= self.until_ms
            if past_until or record.offset >= self.end[partition]:
                self._finish(partition)
                continue
            out.append(record)
            if record.offset + 1 >= self.end[partition]:
                self._finish(partition)
        return out

    def _finish(self, partition: int) -> None:
        if self.end.pop(partition, None) is not None:
            self.consumer.incremental_unassign([TopicPartition(self.topic, partition)])
        self.done = not self.end

    def close(self) -> None:
        self.consumer.close()


async def assign_all(consumer: AIOKafkaConsumer, topic: str) -> list[AioPartition]:
    """Assign every partition of ``topic`` (waiting for its metadata) and return them."""
    while not (found := consumer.partitions_for_topic(topic)):
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    partitions = [AioPartition(topic, p) for p in sorted(found)]
    consumer.assign(partitions)
    return partitions
