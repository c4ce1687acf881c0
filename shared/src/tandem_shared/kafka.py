"""Producing and consuming Tandem events: at-least-once, commit after the outputs are acknowledged.

A handler takes a batch and returns, for each record, either the events to publish or a
``Rejected`` naming why the record can never be processed. The loop here turns that into Kafka
behaviour in one place: retries with backoff, dead letters with their origin, commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from opentelemetry import trace

from tandem_shared import deadletters
from tandem_shared.envelope import (
    EnvelopeError,
    Event,
    Headers,
    decode,
    event_id,
    utcnow,
)
from tandem_shared.events import EventData
from tandem_shared.partitions import partition_indices
from tandem_shared.settings import KafkaSettings
from tandem_shared.telemetry import (
    PipelineMetrics,
    carried,
    context_from_headers,
    guarded,
    recording,
    trace_headers,
)

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


Result = Sequence[Outgoing] | Rejected
BatchHandler = Callable[[Sequence[Incoming[T]]], Awaitable[Sequence[Result]]]
Decoder = Callable[[ConsumerRecord[bytes, bytes]], T]


def event_decoder(accepted: Mapping[str, type[EventData]]) -> Decoder[Event[EventData]]:
    """The strict decoder: a CloudEvent of one of the accepted types, or EnvelopeError."""

    def _decode(record: ConsumerRecord[bytes, bytes]) -> Event[EventData]:
        return decode(record.value, record.headers, accepted)

    return _decode


def make_producer(kafka: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )


def make_consumer(
    kafka: KafkaSettings, group_id: str, topics: Sequence[str], client_id: str
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


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
    """An event as the bytes sent: topic, key, value and headers."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]

    def size(self) -> int:
        """The bytes the record carries (the broker's framing adds a few dozen more)."""
        return len(self.key) + len(self.value) + sum(len(k) + len(v) for k, v in self.headers)


@dataclass(frozen=True)
class _Sent:
    """A handled batch whose outputs are on their way: committed once all are acknowledged."""

    records: list[ConsumerRecord[bytes, bytes]]
    # The idempotent producer retries internally; a future that still fails means a rewind.
    futures: list[asyncio.Future[Any]]


@dataclass
class LoopConfig:
    service: str
    dead_letter_topic: str
    max_records: int = 500
    # A fetched batch is handled in slices of this many records: what a slice decodes is
    # still in the CPU's caches when it is routed, encoded and freed. Handling 500 at once
    # cost a fifth more CPU per record, most of it in allocating and freeing.
    slice_records: int = 100
    timeout_ms: int = 200
    max_attempts: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    # The largest record sent. An output the broker would refuse (1 MiB by default, the
    # producer's request limit too) would fail its batch on every retry and stall the
    # partition, so the record that made it is dead-lettered instead.
    max_record_bytes: int = 1_000_000


class ConsumerLoop(Generic[T]):
    """getmany → decode → handle (with retries) → publish outputs and dead letters → commit."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        publisher: Publisher,
        decoder: Decoder[T],
        handler: BatchHandler[T],
        config: LoopConfig,
        metrics: PipelineMetrics,
        tracer: trace.Tracer,
    ) -> None:
        self.consumer = consumer
        self.publisher = publisher
        self.decoder = decoder
        self.handler = handler
        self.config = config
        self.metrics = metrics
        self.tracer = tracer
        # Ready while the loop makes progress: false until the first fetch, and again while
        # an outage of the broker or of a dependency is being retried.
        self.ready = False
        self._committing: asyncio.Task[None] | None = None
        # The offsets this loop last committed, per partition: lag is measured from them, so
        # a loop that handles records without ever committing shows its lag growing.
        self._committed_offsets: dict[TopicPartition, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        # A batch's acknowledgements are awaited, and its offsets committed, after the next
        # batch has been fetched and handled: the acks arrive meanwhile, so the loop does not
        # sit idle for a round trip per batch. At most one batch is unsettled at any time.
        unsettled: _Sent | None = None
        try:
            while not stop.is_set():
                try:
                    batches = await self.consumer.getmany(
                        timeout_ms=self.config.timeout_ms, max_records=self.config.max_records
                    )
                except KafkaError:
                    log.exception("poll failed; backing off")
                    self.ready = False
                    await _sleep_or_stop(stop, self.config.backoff_s)
                    continue
                self.ready = True
                await self._lag_guarded()
                records = [r for tp in sorted(batches, key=_tp_order) for r in batches[tp]]
                sent: _Sent | None = None
                if records:
                    try:
                        futures = await self._process(records, stop)
                    except KafkaError:
                        log.exception("publishing failed; the batch will be processed again")
                        self.ready = False
                        self._rewind([*(unsettled.records if unsettled else ()), *records])
                        unsettled = None
                        await _sleep_or_stop(stop, self.config.backoff_s)
                        continue
                    if futures is None:
                        return  # stopped while retrying: not committed, redelivered later
                    sent = _Sent(records, futures)
                if unsettled is not None and not await self._settle(unsettled, later=records):
                    unsettled = None
                    await _sleep_or_stop(stop, self.config.backoff_s)
                    continue
                unsettled = sent
        finally:
            if unsettled is not None:
                await self._settle(unsettled, later=[])
            await self._committed()

    async def _settle(self, sent: _Sent, later: list[ConsumerRecord[bytes, bytes]]) -> bool:
        """Wait for the batch's acks, then start committing it; if a send failed, rewind to the
        batch's start (``later`` records, already handled, come again too) and say False."""
        try:
            await Publisher.flush(sent.futures)
        except KafkaError:
            log.exception("publishing failed; the batch will be processed again")
            self.ready = False
            self._rewind([*sent.records, *later])
            return False
        # The commit's round trip (about 8 ms, a tenth of a batch's time) runs while the next
        # batch is handled; commits stay in order, as each waits for the one before.
        await self._committed()
        self._committing = asyncio.create_task(self._commit(sent.records))
        return True

    async def _committed(self) -> None:
        """Wait for the commit in flight, if any."""
        if self._committing is not None:
            await self._committing
            self._committing = None

    async def _process(
        self, records: list[ConsumerRecord[bytes, bytes]], stop: asyncio.Event
    ) -> list[asyncio.Future[Any]] | None:
        """Handle the batch, slice by slice, and send every output; the futures of the sends,
        or None if the loop was stopped while retrying the handler (the batch is not committed,
        so it comes again)."""
        started = time.perf_counter()
        self.metrics.batch_size.labels(self.config.service).observe(len(records))
        outputs: list[Record] = []
        size = self.config.slice_records
        for start in range(0, len(records), size):
            handled = await self._handle_slice(records[start : start + size], stop)
            if handled is None:
                return None
            outputs.extend(handled)
        # Sent together: a produce request per partition for the batch, not for each slice.
        futures = await self._send_all_retrying(outputs, stop)
        self.metrics.batch_seconds.labels(self.config.service).observe(
            time.perf_counter() - started
        )
        return futures

    async def _handle_slice(
        self, records: list[ConsumerRecord[bytes, bytes]], stop: asyncio.Event
    ) -> list[Record] | None:
        """Decode and handle the records; their outputs and dead letters as records to send."""
        started_ns = time.time_ns()
        incoming: list[Incoming[T]] = []
        rejected: list[tuple[Incoming[None], Rejected]] = []
        for record in records:
            try:
                incoming.append(_incoming(record, self.decoder(record)))
            except (EnvelopeError, Rejected) as exc:
                rejected.append((_incoming(record, None), Rejected(str(exc))))
            except Exception as exc:  # noqa: BLE001 - a record no decoder can read is poison
                reason = Rejected(f"cannot decode: {type(exc).__name__}: {exc}")
                rejected.append((_incoming(record, None), reason))
        results = await self._handle_with_retries(incoming, stop)
        if results is None:
            return None
        outputs: list[Record] = []
        processed: dict[str, int] = {}  # by topic, counted once a slice
        traced = recording()  # once a slice: whether spans are made at all
        for item, result in zip(incoming, results, strict=True):
            with self._span(item, started_ns, traced):
                if isinstance(result, Rejected):
                    rejected.append((_without_item(item), result))
                    continue
                # Made inside the record's span, so each output continues its own trace.
                made = [Publisher.record(out) for out in result]
                too_large = [r for r in made if r.size() > self.config.max_record_bytes]
                if too_large:
                    reason = Rejected(
                        f"an output to {too_large[0].topic} would be {too_large[0].size()} bytes,"
                        f" over the limit of {self.config.max_record_bytes}"
                    )
                    rejected.append((_without_item(item), reason))
                    continue
                outputs.extend(made)
            processed[item.topic] = processed.get(item.topic, 0) + 1
        for topic, count in processed.items():
            self.metrics.processed_child(self.config.service, topic).inc(count)
        with guarded("event age"):
            self._observe_ages(incoming)
        for meta, reason in rejected:
            with self._span(meta, started_ns, traced):
                outputs.extend(Publisher.record(out) for out in self._dead_letter(meta, reason))
        return outputs

    async def _handle_with_retries(
        self, batch: list[Incoming[T]], stop: asyncio.Event
    ) -> Sequence[Result] | None:
        if not batch:
            return []
        attempt = 0
        while not stop.is_set():
            attempt += 1
            try:
                results = await self.handler(batch)
            except TransientError as exc:
                # Retried for as long as the outage lasts; never a dead letter.
                log.warning("transient failure (attempt %d): %s", attempt, exc)
                self.ready = False
                await self._lag_guarded()  # the lag of a stuck loop shows, and stays
            except Exception as exc:
                self.metrics.failed.labels(
                    self.config.service, batch[0].topic, type(exc).__name__
                ).inc()
                if attempt >= self.config.max_attempts:
                    return await self._isolate(batch, stop)
                log.warning(
                    "batch failed (attempt %d/%d)", attempt, self.config.max_attempts, exc_info=True
                )
            else:
                if len(results) != len(batch):
                    raise RuntimeError("handler must return one result per record")
                self.ready = True
                return results
            await _sleep_or_stop(stop, self._backoff(attempt))
        return None

    async def _isolate(self, batch: list[Incoming[T]], stop: asyncio.Event) -> list[Result] | None:
        """The batch keeps failing: find the poison records by handling each one alone."""
        if len(batch) == 1:
            return [Rejected("handler failed after retries")]
        results: list[Result] = []
        for item in batch:
            try:
                results.append((await self.handler([item]))[0])
            except TransientError:
                nested = await self._handle_with_retries([item], stop)
                if nested is None:
                    return None
                results.append(nested[0])
            except Exception as exc:  # noqa: BLE001 - a poison record becomes a dead letter
                log.error(
                    "record %s/%d@%d rejected: %r", item.topic, item.partition, item.offset, exc
                )
                results.append(Rejected(f"{type(exc).__name__}: {exc}"))
        return results

    def _dead_letter(self, meta: Incoming[None], reason: Rejected) -> list[Outgoing]:
        self.metrics.deadlettered.labels(self.config.service, meta.topic).inc()
        log.warning("dead-lettering %s/%d@%d: %s", meta.topic, meta.partition, meta.offset, reason)
        if meta.topic == self.config.dead_letter_topic:
            return []  # never loop: a bad dead letter is logged and counted, above
        origin = f"{meta.topic}/{meta.partition}/{meta.offset}"
        data = deadletters.letter(
            topic=meta.topic,
            partition=meta.partition,
            offset=meta.offset,
            key=meta.key,
            value=meta.value,
            headers=meta.headers,
            service=self.config.service,
            error=str(reason),
            error_type=type(reason.__cause__ or reason).__name__,
            failed_at=utcnow(),
        )
        # The letter's subject is its key: the original key, cut like the letter's copy of it.
        event = Event(
            event_id(origin, "deadletter"),
            self.config.service,
            data.origin_key or origin,
            data,
            utcnow(),
        )
        return [Outgoing(self.config.dead_letter_topic, event)]

    async def _send_all_retrying(
        self, records: list[Record], stop: asyncio.Event
    ) -> list[asyncio.Future[Any]]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.publisher.send_records(records)
            except KafkaError:
                if stop.is_set():
                    raise
                log.warning("sending failed (attempt %d)", attempt, exc_info=True)
                self.ready = False
                await asyncio.sleep(self._backoff(attempt))

    async def _commit(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            offsets[TopicPartition(r.topic, r.partition)] = r.offset + 1
        try:
            await self.consumer.commit(offsets)
        except KafkaError:
            # A rebalance took the partition: its new owner reprocesses, sinks dedupe by id.
            log.warning("commit failed; records will be redelivered", exc_info=True)
            return
        self._committed_offsets.update(offsets)
        counts: dict[str, int] = {}
        for r in records:
            counts[r.topic] = counts.get(r.topic, 0) + 1
        for topic, count in counts.items():
            self.metrics.committed.labels(self.config.service, topic).inc(count)

    def _span(self, item: Incoming[Any], start_ns: int, traced: bool) -> Any:
        if not traced:
            return carried(item.headers)
        return self.tracer.start_as_current_span(
            f"{item.topic} process",
            context=context_from_headers(item.headers),
            kind=trace.SpanKind.CONSUMER,
            start_time=start_ns,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": item.topic,
                "messaging.destination.partition.id": str(item.partition),
                "messaging.kafka.offset": item.offset,
                "messaging.kafka.message.key": item.key or "",
                "messaging.consumer.group.name": self.consumer._group_id or "",
            },
        )

    def last_fetch(self) -> float | None:
        """When the broker last answered a fetch for one of this loop's partitions (seconds
        since the epoch), records or not; None before the first answer."""
        stamps = [self.consumer.last_poll_timestamp(tp) for tp in self.consumer.assignment()]
        known = [s for s in stamps if s is not None]
        return max(known) / 1000 if known else None

    def _observe_ages(self, items: Sequence[Incoming[Any]]) -> None:
        now = time.time()
        for item in items:
            age = now - item.timestamp_ms / 1000
            self.metrics.end_to_end_child(self.config.service, item.topic).observe(max(age, 0.0))

    async def _lag_guarded(self) -> None:
        try:
            await self._record_lag()
        except Exception:
            log.debug("lag metric failed", exc_info=True)

    async def _record_lag(self) -> None:
        """Records on each assigned partition past the committed offset. Not the fetch
        position: a loop that fetches and handles but never commits would read 0."""
        assigned = self.consumer.assignment()
        for tp in [tp for tp in self._committed_offsets if tp not in assigned]:
            del self._committed_offsets[tp]  # revoked: its next owner reports it
        for tp in assigned:
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            committed = self._committed_offsets.get(tp)
            if committed is None:
                # Not committed by this loop yet: what the group committed, once per assignment.
                committed = await self.consumer.committed(tp)
                if committed is None:
                    committed = (await self.consumer.beginning_offsets([tp])).get(tp, 0)
                self._committed_offsets[tp] = committed
            self.metrics.lag.labels(self.config.service, tp.topic, str(tp.partition)).set(
                max(highwater - committed, 0)
            )

    def _rewind(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        first: dict[TopicPartition, int] = {}
        for r in records:
            first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        for tp, offset in first.items():
            try:
                self.consumer.seek(tp, offset)
            except IllegalStateError:
                # A rebalance took the partition meanwhile: its new owner starts from the
                # committed offset, so nothing is lost. Raising here would kill the loop.
                log.info("not rewinding %s: no longer assigned", tp)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.config.backoff_s * 2 ** (attempt - 1), self.config.max_backoff_s))


def _incoming(record: ConsumerRecord[bytes, bytes], item: T) -> Incoming[T]:
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    return Incoming(
        item,
        record.topic,
        record.partition,
        record.offset,
        key,
        tuple(record.headers),
        record.timestamp,
        record.value,
    )


def _without_item(item: Incoming[Any]) -> Incoming[None]:
    return Incoming(
        None,
        item.topic,
        item.partition,
        item.offset,
        item.key,
        item.headers,
        item.timestamp_ms,
        item.value,
    )


def _tp_order(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
