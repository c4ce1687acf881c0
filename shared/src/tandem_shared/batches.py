"""What the consumer loop does with a fetched batch, apart from Kafka: decode, handle in slices
with retries, find the poison records, and turn the results into the records to send (outputs
and dead letters). The loop (loop.py) sends those and commits in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from opentelemetry import trace

from tandem_shared import deadletters
from tandem_shared.envelope import EnvelopeError, Event, event_id, utcnow
from tandem_shared.kafka import (
    BatchHandler,
    Consumed,
    Decoder,
    Incoming,
    Outgoing,
    Publisher,
    Record,
    Rejected,
    Result,
    TransientError,
)
from tandem_shared.telemetry import (
    PipelineMetrics,
    carried,
    context_from_headers,
    guarded,
    observe_all,
    recording,
)

if TYPE_CHECKING:
    from tandem_shared.loop import LoopConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
OnTransient = Callable[[], Awaitable[None]]


class BatchWork(Generic[T]):
    def __init__(
        self,
        decoder: Decoder[T],
        handler: BatchHandler[T],
        config: LoopConfig,
        metrics: PipelineMetrics,
        tracer: trace.Tracer,
        group_id: str,
    ) -> None:
        self.decoder = decoder
        self.handler = handler
        self.config = config
        self.metrics = metrics
        self.tracer = tracer
        self.group_id = group_id

    async def handle(
        self, batch: list[Consumed], stop: asyncio.Event, on_transient: OnTransient
    ) -> list[Record] | None:
        """The records to send for the batch, slice by slice; None if the loop was stopped
        while retrying (the batch is not committed, so it comes again)."""
        outputs: list[Record] = []
        size = self.config.slice_records
        for start in range(0, len(batch), size):
            handled = await self._slice(batch[start : start + size], stop, on_transient)
            if handled is None:
                return None
            outputs.extend(handled)
        return outputs

    async def _slice(
        self, records: list[Consumed], stop: asyncio.Event, on_transient: OnTransient
    ) -> list[Record] | None:
        started_ns = time.time_ns()
        incoming: list[Incoming[T]] = []
        rejected: list[tuple[Incoming[None], Rejected]] = []
        for record in records:
            try:
                incoming.append(_incoming(record, self.decoder(record)))
            except Rejected as exc:
                rejected.append((_incoming(record, None), exc))
            except EnvelopeError as exc:
                reason = Rejected(str(exc))
                reason.__cause__ = exc  # the letter's error_type names the cause
                rejected.append((_incoming(record, None), reason))
            except Exception as exc:  # noqa: BLE001 - a record no decoder can read is poison
                reason = Rejected(f"cannot decode: {type(exc).__name__}: {exc}")
                rejected.append((_incoming(record, None), reason))
        results = await self._with_retries(incoming, stop, on_transient)
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
                made = [o if isinstance(o, Record) else Publisher.record(o) for o in result]
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

    async def _with_retries(
        self, batch: list[Incoming[T]], stop: asyncio.Event, on_transient: OnTransient
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
                await on_transient()
            except Exception as exc:
                self.metrics.failed.labels(
                    self.config.service, batch[0].topic, type(exc).__name__
                ).inc()
                if attempt >= self.config.max_attempts:
                    return await self._isolate(batch, stop, on_transient)
                log.warning(
                    "batch failed (attempt %d/%d)", attempt, self.config.max_attempts, exc_info=True
                )
            else:
                if len(results) != len(batch):
                    raise RuntimeError("handler must return one result per record")
                return results
            await sleep_or_stop(stop, backoff(self.config, attempt))
        return None

    async def _isolate(
        self, batch: list[Incoming[T]], stop: asyncio.Event, on_transient: OnTransient
    ) -> list[Result] | None:
        """The batch keeps failing: find the poison records by handling each one alone."""
        if len(batch) == 1:
            return [Rejected("handler failed after retries")]
        results: list[Result] = []
        for item in batch:
            try:
                results.append((await self.handler([item]))[0])
            except TransientError:
                nested = await self._with_retries([item], stop, on_transient)
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
                "messaging.consumer.group.name": self.group_id,
            },
        )

    def _observe_ages(self, items: Sequence[Incoming[Any]]) -> None:
        now = time.time()
        ages: dict[str, list[float]] = {}
        for item in items:
            ages.setdefault(item.topic, []).append(max(now - item.timestamp_ms / 1000, 0.0))
        for topic, seconds in ages.items():
            observe_all(self.metrics.end_to_end_child(self.config.service, topic), seconds)


def _incoming(record: Consumed, item: T) -> Incoming[T]:
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    return Incoming(
        item,
        record.topic,
        record.partition,
        record.offset,
        key,
        record.headers,  # read-only from here on: no copy
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


def backoff(config: LoopConfig, attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1``: doubling, capped."""
    return float(min(config.backoff_s * 2 ** (attempt - 1), config.max_backoff_s))


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
