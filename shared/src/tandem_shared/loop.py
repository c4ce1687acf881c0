"""The stream processors' loop: consume, handle, produce and commit as one Kafka transaction.

Handled batches commit in transactions of a librdkafka producer: their outputs, their dead
letters and the consumer group's new offsets commit together, or none of them does and the
batches are handled again. Readers read committed records only, so a crash, a rebalance or a broker
restart never shows a batch's outputs twice. The offsets are sent with the group's metadata,
so a member the group has replaced (a zombie) cannot commit.

librdkafka's calls block: the consumer and the producer live on a thread of their own, and the
event loop runs the handlers. A transaction commits on that thread while the event loop
handles the records fetched meanwhile, and the next transaction is begun and its first batch's
offsets sent while that batch is handled: those round trips to the broker (and its wait for
the last transaction's markers) cost the batches no time of their own. Caught up (a batch
short of max_records), each batch commits at once. Behind (a backlog), a transaction takes
the batches of up to commit_interval_ms, as Kafka Streams does: a transaction costs the broker
the same whatever it holds, and with two processes its wait to begin grows long. A rebalance,
a dependency's outage or the loop's stop commits the batches already sent first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry import trace

from tandem_shared import clients
from tandem_shared.batches import BatchWork, backoff, sleep_or_stop
from tandem_shared.kafka import BatchHandler, Consumed, Decoder, Record, consumed
from tandem_shared.settings import KafkaSettings
from tandem_shared.telemetry import PipelineMetrics

log = logging.getLogger(__name__)
STUCK_CHECK_S = 5.0  # how often a call on the client thread is looked at while it runs

T = TypeVar("T")
R = TypeVar("R")
Polled = tuple[list[Message], list[TopicPartition]]  # records, and the offsets past them


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
    # The largest record sent. An output the broker would refuse would fail its transaction
    # on every retry and stall the partition, so the record that made it is dead-lettered.
    max_record_bytes: int = clients.MAX_RECORD_BYTES
    transaction_timeout_ms: int = 10_000
    # Working off a backlog, a transaction takes batches for this long before it commits.
    commit_interval_ms: int = 100
    # Names the process among the service's replicas; makes its transactional ids stable.
    instance_id: str | None = None
    # With nothing to consume, the broker is asked for metadata this often: readiness and
    # "last heard from the broker" stay true to it on an idle topic.
    ping_s: float = 2.0
    # A transactional call given a timeout (30 s) that has not returned this long never will:
    # librdkafka can wait for a group coordinator for ever after a broker restart, whatever
    # the timeout (confluentinc/librdkafka#5456, #5511). The loop then ends (Stuck).
    stuck_after_s: float = 45.0


class PartitionState(Protocol):
    """State a handler keeps per input partition (the router's routed task ids): loaded when
    the group assigns a partition, before any of its records is handled, and dropped when the
    partition is revoked. Called on the loop's client thread, inside the rebalance; a load that
    cannot finish raises, which ends the loop (the service then fails its health check)."""

    def assigned(self, partitions: Sequence[tuple[str, int]]) -> None: ...

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None: ...


class Stuck(Exception):
    """A call into librdkafka blocks past its timeout and will not return: the loop ends, so
    the service fails its health check and is restarted, and its successor, taking the same
    transactional id, aborts what this one left open."""


class _Again(Exception):
    """The transaction was aborted: handle the batch again."""


@dataclass
class _Transaction:
    """The open transaction: begun with its first batch's offsets, then the batches sent in it."""

    started: float  # perf_counter
    # Begin and the first batch's offsets, on the client thread while that batch is handled.
    opening: asyncio.Future[None] | None
    # The offsets sent so far: the first batch's, until the transaction commits.
    offsets_sent: list[TopicPartition]
    sent: list[list[Consumed]] = field(default_factory=list)  # batches whose records were sent
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # past the batches sent

    def add(self, batch: list[Consumed], positions: list[TopicPartition]) -> None:
        self.sent.append(batch)
        for tp in positions:
            key = (tp.topic, tp.partition)
            self.positions[key] = max(self.positions.get(key, -1), tp.offset)

    def records(self) -> list[Consumed]:
        return [r for batch in self.sent for r in batch]


class ConsumerLoop(Generic[T]):
    """poll → decode → handle (with retries) → one transaction: outputs, dead letters, offsets."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        topics: Sequence[str],
        decoder: Decoder[T],
        handler: BatchHandler[T],
        config: LoopConfig,
        metrics: PipelineMetrics,
        tracer: trace.Tracer,
        client_id: str | None = None,
        state: PartitionState | None = None,
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.topics = list(topics)
        self.config = config
        self.metrics = metrics
        self.client_id = client_id or f"tandem-{config.service}"
        self.state = state
        # Kept for the loop's life: a new producer after a failed abort takes the same id.
        self._transactional_id = clients.transactional_id(group_id, config.instance_id)
        self.work = BatchWork(decoder, handler, config, metrics, tracer, group_id)
        # Ready while the loop makes progress: false until the broker answered, and again
        # while an outage of the broker or of a dependency is being retried.
        self.ready = False
        self._last_contact: float | None = None
        self._last_ping = 0.0
        self._aborts = 0  # transactions aborted in a row: the backoff grows with them
        # Seen by the client thread, which retries an outage until the loop stops.
        self._stopping = threading.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=group_id[:40])
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # The offsets this group committed, per partition: lag is counted from them, so a
        # loop that handles records without committing shows its lag staying.
        self._committed: dict[tuple[str, int], int] = {}
        self._txn: _Transaction | None = None
        # The records of a transaction aborted where they could not be rewound at once (in a
        # rebalance, or while a batch was handled): rewound before the next batch is handled.
        self._lost: list[Consumed] | None = None
        # A commit on the client thread while the next batch is handled; failed, it leaves
        # its records in _lost.
        self._committing: asyncio.Future[None] | None = None
        # Since when the client thread waits in a transactional call (monotonic), if it does.
        self._blocked_since: float | None = None
        self._stuck = False

    # --- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        relay = asyncio.create_task(_relay(stop, self._stopping))
        failed = False
        ahead: Polled | None = None  # fetched while the last transaction commits
        try:
            await self._call(self._open)
            while not stop.is_set():
                if ahead is None:
                    await self._settle()
                    messages, positions = await self._poll_retrying(stop)
                else:
                    (messages, positions), ahead = ahead, None
                batch = [consumed(m) for m in messages]
                if self._lost is not None:  # aborted in a rebalance: all of it comes again
                    await self._settle()
                    lost, self._lost = self._lost, None
                    await self._aborted(lost + batch, stop)
                    continue
                if not batch:
                    await self._commit_open(stop)  # caught up
                    await self._lag_guarded()
                    continue
                self._lag_behind()
                if not await self._handle(batch, positions, stop):
                    return  # stopped while retrying: not committed, delivered again later
                if self._commit_due(batch):
                    ahead = await self._commit_ahead(stop)
        except BaseException:
            failed = True
            raise
        finally:
            relay.cancel()
            self._stopping.set()
            if failed and self._committing is not None:
                # A commit still on the client thread: its outcome is read when it ends, not
                # raised; the loop's own failure is what is reported.
                self._committing.add_done_callback(_read_quietly)
                self._committing = None
            if self._stuck:  # the client thread will not come back: leave it, and the clients
                self._thread.shutdown(wait=False)
            else:
                if not failed:  # stopped: the batches already sent commit, else come again
                    await self._settle()
                    await self._call(self._commit_sent)
                await self._call(self._close)  # aborts a transaction left open
                self._thread.shutdown(wait=True)

    async def _handle(
        self, batch: list[Consumed], positions: list[TopicPartition], stop: asyncio.Event
    ) -> bool:
        """Handle the batch and send its records in the open transaction (begun with it, if
        none was open); False if the loop was stopped first. After an abort the consumer is
        rewound to the start of every batch of the transaction, so their records come again
        from the broker, or go to the member a rebalance gave them to."""
        started = time.perf_counter()
        self.metrics.batch_size.labels(self.config.service).observe(len(batch))
        txn = self._txn
        if txn is None:  # begun once the last one committed: the client thread takes calls in turn
            opening = self._submit(self._open_transaction, positions)
            txn = self._txn = _Transaction(started, opening, positions)
        records = await self.work.handle(batch, stop, self._on_transient)
        try:
            await self._settle()
            if txn.opening is not None:
                opening, txn.opening = txn.opening, None
                await self._await(opening)
            if self._lost is not None:  # the transaction failed while the batch was handled
                lost, self._lost = self._lost, None
                await self._aborted(lost + batch, stop)
                return not stop.is_set()
            if records is None:
                return False
            txn = await self._open_for(batch, positions, started)
            await self._call(self._send, records)
        except _Again:
            txn, self._txn = self._txn, None
            lost, self._lost = self._lost or [], None  # a commit that failed meanwhile
            await self._aborted(lost + (txn.records() if txn else []) + batch, stop)
            return not stop.is_set()
        txn.add(batch, positions)
        return True

    def _commit_due(self, batch: list[Consumed]) -> bool:
        """Caught up (the batch was short), or the transaction's interval is over."""
        txn = self._txn
        if txn is None or not txn.sent:
            return False
        interval = self.config.commit_interval_ms / 1000
        return len(batch) < self.config.max_records or time.perf_counter() - txn.started >= interval

    async def _commit_ahead(self, stop: asyncio.Event) -> Polled | None:
        """Commit the open transaction. The records already fetched are taken first, without
        waiting for more, and returned: they are handled while the client thread commits. With
        none fetched, the commit is waited for and None returned."""
        txn = self._txn
        try:
            messages, positions = await self._call(self._poll, 0.0)
        except KafkaException:
            log.exception("poll failed")
            messages, positions = [], []
        if self._txn is txn and txn is not None:  # not committed by a rebalance in the poll
            if not messages:
                await self._commit_open(stop)
                return None
            self._txn = None
            self._committing = self._submit(self._commit_given, txn)
        return messages, positions

    async def _settle(self) -> None:
        """Wait for the commit on the client thread, if one runs."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await self._await(committing)

    async def _open_for(
        self, batch: list[Consumed], positions: list[TopicPartition], started: float
    ) -> _Transaction:
        """The transaction the handled batch's records go in: the open one, unless a long
        wait (an outage waited out) left it near the broker's timeout for it."""
        txn = self._txn
        half_timeout = self.config.transaction_timeout_ms / 2000
        if txn is not None and time.perf_counter() - txn.started <= half_timeout:
            return txn
        if txn is not None and txn.sent:  # the batches before this one commit first
            await self._call(self._finish, txn)  # _Again: they come again with this one
            self._txn = txn = None
        if txn is None:  # committed while the batch was handled, or just now
            txn = self._txn = _Transaction(time.perf_counter(), None, positions)
            await self._call(self._open_transaction, positions)
            return txn
        # Begun with this batch, which took long: the broker would soon abort it on its own.
        log.info(
            "the batch took %.1f s; its transaction is begun again", time.perf_counter() - started
        )
        await self._call(self._reopen, positions)
        txn.started = time.perf_counter()
        return txn

    async def _commit_open(self, stop: asyncio.Event) -> bool:
        """Commit the open transaction's batches, if any; False if it was aborted (its
        batches come again)."""
        txn = self._txn
        if txn is None or not txn.sent:
            return True
        self._txn = None
        try:
            await self._call(self._finish, txn)
        except _Again:
            await self._aborted(txn.records(), stop)
            return False
        return True

    async def _aborted(self, records: list[Consumed], stop: asyncio.Event) -> None:
        """A transaction was aborted: its records come again."""
        self._aborts += 1
        self.ready = False
        self.metrics.transactions.labels(self.config.service, "aborted").inc()
        if not stop.is_set():
            await self._call(self._rewind, records)
            await sleep_or_stop(stop, backoff(self.config, self._aborts))

    async def _poll_retrying(
        self, stop: asyncio.Event
    ) -> tuple[list[Message], list[TopicPartition]]:
        try:
            return await self._call(self._poll)
        except KafkaException:
            log.exception("poll failed; backing off")
            self.ready = False
            await sleep_or_stop(stop, self.config.backoff_s)
            return [], []

    async def _on_transient(self) -> None:
        """A dependency is down and the batch is retried: not ready, the lag shown, and the
        batches already sent committed (the open transaction would hold back the readers of
        their outputs). Should that commit fail, they are rewound with this batch once it is
        handled."""
        self.ready = False
        await self._call(self._commit_sent)
        await self._lag_guarded()

    def last_fetch(self) -> float | None:
        """When the broker last answered this loop (seconds since the epoch), records or not;
        None before the first answer."""
        return self._last_contact

    # --- on the client thread ---------------------------------------------------------------

    def _submit(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """``fn`` started on the client thread."""
        return asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _call(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn`` on the client thread; Stuck if a transactional call there never returns."""
        return await self._await(self._submit(fn, *args))

    async def _await(self, future: asyncio.Future[R]) -> R:
        """The result of a call on the client thread; Stuck if a transactional call there
        never returns."""
        while True:
            every = min(STUCK_CHECK_S, self.config.stuck_after_s)
            done, _ = await asyncio.wait({future}, timeout=every)
            if done:
                return future.result()
            since = self._blocked_since
            if since is not None and time.monotonic() - since > self.config.stuck_after_s:
                self._stuck = True
                self.ready = False
                raise Stuck(
                    f"{self.group_id}: a transactional call into librdkafka has not returned "
                    f"in {time.monotonic() - since:.0f} s; ending the loop"
                )

    def _timed(self, call: Callable[[], None]) -> Callable[[], None]:
        """``call`` (a librdkafka call with a timeout), watched for never returning."""

        def watched() -> None:
            self._blocked_since = time.monotonic()
            try:
                call()
            finally:
                self._blocked_since = None

        return watched

    def _open(self) -> None:
        consumer = Consumer(
            {
                **clients.transactional_consumer(self.kafka, self.group_id, self.client_id),
                "error_cb": self._on_error,
            }
        )
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._consumer = consumer
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        transactional_id = self._transactional_id
        producer = Producer(
            {
                **clients.transactional_producer(
                    self.kafka,
                    self.client_id,
                    transactional_id,
                    self.config.transaction_timeout_ms,
                ),
                "error_cb": self._on_error,
            }
        )
        while True:
            try:
                # Fences an earlier producer of this id and aborts what it left open.
                self._timed(lambda: producer.init_transactions(30))()
                return producer
            except KafkaException as exc:
                if not exc.args[0].retriable() or self._stopping.is_set():
                    raise
                log.warning("initialising transactions failed; trying again: %s", exc)

    def _close(self) -> None:
        if self._producer is not None:
            # A transaction left open (the loop stopped while its batch was handled) would
            # hold back the group's next member until the broker times it out.
            with contextlib.suppress(KafkaException):  # none was open
                self._producer.abort_transaction(5)
        if self._consumer is not None:
            self._consumer.close()  # leaves the group at once, so a rebalance need not wait
        self._consumer = None
        self._producer = None

    def _poll(self, wait_s: float | None = None) -> Polled:
        """The records already fetched, up to max_records, and the offsets past them; waits
        (up to the timeout, or ``wait_s``) only for the first, so a quiet topic is answered at
        once, not when a batch fills."""
        consumer = self._require(self._consumer)
        first = consumer.poll(self.config.timeout_ms / 1000 if wait_s is None else wait_s)
        if first is None:
            self._when_quiet()
            return [], []
        more = self.config.max_records - 1
        rest = consumer.consume(more, 0) if more else []
        messages = []
        for m in [first, *rest]:
            error = m.error()
            if error is None:
                messages.append(m)
            elif error.fatal():
                raise KafkaException(error)
            else:
                log.warning("consumer error: %s", error)
        if not messages:
            return [], []
        self._last_contact = time.time()
        self.ready = True
        # Past the batch's last records, and any transaction markers after them that the
        # consumer already read past. Taken now: the next poll moves the consumer on.
        last = _positions(messages)
        read = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(last)}
        for tp in last:
            tp.offset = max(tp.offset, read.get((tp.topic, tp.partition), -1))
        return messages, last

    def _when_quiet(self) -> None:
        """Nothing to consume: now and then, ask the broker for metadata (so readiness and
        "last heard from the broker" stay true on an idle topic) and commit the positions that
        moved past transaction markers alone (so an idle group's lag reads 0)."""
        now = time.time()
        if now - self._last_ping < self.config.ping_s:
            return
        self._last_ping = now
        consumer = self._require(self._consumer)
        try:
            for topic in self.topics:
                found = consumer.list_topics(topic, timeout=self.config.ping_s).topics.get(topic)
                if found is None or found.error is not None:
                    raise KafkaException(found.error if found else KafkaError._UNKNOWN_TOPIC)
        except KafkaException as exc:
            log.warning("cannot read %s: %s", ", ".join(self.topics), exc)
            self.ready = False
            return
        self._last_contact = time.time()
        self.ready = True
        if self._txn is not None:
            return  # committed with the open transaction
        moved = [
            tp
            for tp in consumer.position(consumer.assignment())
            if tp.offset > self._committed.get((tp.topic, tp.partition), tp.offset)
        ]
        if moved:
            with contextlib.suppress(_Again):
                self._open_transaction(moved)
                self._commit_transaction(moved)

    def _reopen(self, positions: list[TopicPartition]) -> None:
        with self._aborting():
            self._timed(lambda: self._require(self._producer).abort_transaction(30))()
        self._open_transaction(positions)

    def _open_transaction(self, positions: list[TopicPartition]) -> None:
        """Begin a transaction and send the offsets in it; _Again if it was aborted.

        The offsets go first: until the broker has finished the last transaction, the
        coordinator refuses this one's first request, and the client retries the offsets
        after retry.backoff.ms but a partition's registration only after a fixed 20 ms. Once
        the offsets are in, the records' partitions register at once."""
        if self._lost is not None:  # a commit failed: its records come again first
            raise _Again
        producer = self._require(self._producer)
        with self._aborting():
            producer.begin_transaction()
        self._send_offsets(positions)

    def _send_offsets(self, positions: list[TopicPartition]) -> None:
        producer = self._require(self._producer)
        consumer = self._require(self._consumer)

        def send_offsets() -> None:
            group = consumer.consumer_group_metadata()
            producer.send_offsets_to_transaction(positions, group, 30)

        with self._aborting():
            _retrying(self._timed(send_offsets), self._stopping)

    def _send(self, records: list[Record]) -> None:
        """Send records in the open transaction; _Again if it was aborted."""
        producer = self._require(self._producer)
        with self._aborting():
            for r in records:
                _produce(producer, r)

    def _finish(self, txn: _Transaction) -> None:
        """Commit the transaction with the offsets past all its batches, and count them."""
        positions = [TopicPartition(t, p, o) for (t, p), o in txn.positions.items()]
        sent = {(tp.topic, tp.partition): tp.offset for tp in txn.offsets_sent}
        if sent != txn.positions:  # batches after the first: their offsets too
            self._send_offsets(positions)
        self._commit_transaction(positions)
        self._aborts = 0
        self.ready = True
        self._last_contact = time.time()
        self.metrics.transactions.labels(self.config.service, "committed").inc()
        for batch in txn.sent:
            self._count_committed(batch)
        self.metrics.batch_seconds.labels(self.config.service).observe(
            time.perf_counter() - txn.started
        )

    def _commit_transaction(self, positions: list[TopicPartition]) -> None:
        """Commit the open transaction; _Again if it was aborted. Retriable failures (a
        coordinator moving, a broker restarting) are retried here, for as long as they last."""
        producer = self._require(self._producer)
        with self._aborting():
            _retrying(self._timed(lambda: producer.commit_transaction(30)), self._stopping)
        for tp in positions:
            self._committed[(tp.topic, tp.partition)] = tp.offset

    def _commit_sent(self) -> None:
        """Commit the open transaction's batches where they cannot wait (in a rebalance, a
        dependency's outage, the loop's stop). Should it fail, its records are rewound where
        that is safe: after the rebalance, or with the batch being handled. A transaction with
        no batch sent yet is left alone: the offsets it holds are of a batch not sent."""
        txn = self._txn
        if txn is None or not txn.sent:
            return
        self._txn = None
        self._commit_given(txn)

    def _commit_given(self, txn: _Transaction) -> None:
        """Commit the transaction; should it fail, its records are kept to be rewound."""
        try:
            self._finish(txn)
        except _Again:
            self._lost = (self._lost or []) + txn.records()

    @contextlib.contextmanager
    def _aborting(self) -> Iterator[None]:
        """A failure within aborts the open transaction and raises _Again."""
        producer = self._require(self._producer)
        stopping = self._stopping
        try:
            yield
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal():
                # Fenced, most often by the broker aborting a transaction that outlived its
                # timeout during an outage: the producer is done for, the process is not. Its
                # instance id is its own, so a new producer of the same id fences only its
                # predecessor; a member the group replaced still cannot commit (the offsets
                # carry the group's generation).
                log.warning("the producer cannot go on (%s); starting a new one", error)
                self._producer = None if stopping.is_set() else self._new_producer()
                raise _Again from exc
            log.warning("transaction aborted; the batch will be handled again: %s", error)
            try:
                abort = self._timed(lambda: producer.abort_transaction(30))
                _retrying(abort, stopping, attempts=3)
            except KafkaException:
                # The producer is in no state to go on: a new one with the same transactional
                # id fences it and aborts what it left open.
                log.warning("abort failed; starting a new producer", exc_info=True)
                self._producer = None if stopping.is_set() else self._new_producer()
            raise _Again from exc

    def _rewind(self, batch: list[Consumed]) -> None:
        consumer = self._require(self._consumer)
        first: dict[tuple[str, int], int] = {}
        for r in batch:
            key = (r.topic, r.partition)
            first[key] = min(first.get(key, r.offset), r.offset)
        for (topic, partition), offset in first.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException:
                # A rebalance took the partition meanwhile: its next owner starts from the
                # committed offset, so nothing is lost.
                log.info("not rewinding %s/%d: no longer assigned", topic, partition)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit_sent()
        for tp in partitions:
            self._committed.pop((tp.topic, tp.partition), None)  # read again from the group
        if self.state is not None:
            self.state.assigned([(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Before partitions change hands: offsets committed after a partition was given
        # away would skip what its next owner already read.
        self._commit_sent()
        if self.state is not None:
            self.state.revoked([(tp.topic, tp.partition) for tp in partitions])
        for tp in partitions:
            self._committed.pop((tp.topic, tp.partition), None)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(self.config.service, tp.topic, str(tp.partition))

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.ready = False
        log.warning("kafka: %s", error)

    def _lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, records past the committed offset) per assigned partition."""
        consumer = self._require(self._consumer)
        assigned = consumer.assignment()
        unknown = [tp for tp in assigned if (tp.topic, tp.partition) not in self._committed]
        if unknown:
            for tp in consumer.committed(unknown, timeout=5):
                if tp.offset >= 0:
                    self._committed[(tp.topic, tp.partition)] = tp.offset
                else:  # nothing committed yet: the group starts at the beginning
                    low, _ = consumer.get_watermark_offsets(tp, timeout=5)
                    self._committed[(tp.topic, tp.partition)] = low
        out = []
        for tp in assigned:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            committed = self._committed.get((tp.topic, tp.partition))
            if high >= 0 and committed is not None:
                out.append((tp.topic, tp.partition, max(high - committed, 0)))
        return out

    # --- bookkeeping ------------------------------------------------------------------------

    async def _lag_guarded(self) -> None:
        try:
            lags = await self._call(self._lag)
        except Exception:
            log.debug("lag metric failed", exc_info=True)
            return
        self._show_lag(lags)

    def _lag_behind(self) -> None:
        """The lag metric taken on the client thread after what it is doing (a commit), not
        waited for: the batch is handled meanwhile."""

        def shown(future: asyncio.Future[list[tuple[str, int, int]]]) -> None:
            if future.cancelled() or future.exception() is not None:
                log.debug("lag metric failed", exc_info=future.exception())
            else:
                self._show_lag(future.result())

        self._submit(self._lag).add_done_callback(shown)

    def _show_lag(self, lags: list[tuple[str, int, int]]) -> None:
        for topic, partition, lag in lags:
            self.metrics.lag.labels(self.config.service, topic, str(partition)).set(lag)

    def _count_committed(self, batch: list[Consumed]) -> None:
        counts: dict[str, int] = {}
        for r in batch:
            counts[r.topic] = counts.get(r.topic, 0) + 1
        for topic, count in counts.items():
            self.metrics.committed.labels(self.config.service, topic).inc(count)

    @staticmethod
    def _require(client: R | None) -> R:
        if client is None:
            raise RuntimeError("the loop is not running")
        return client


async def _relay(stop: asyncio.Event, stopping: threading.Event) -> None:
    await stop.wait()
    stopping.set()


def _read_quietly(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _positions(messages: list[Message]) -> list[TopicPartition]:
    """The offsets to commit: past each partition's last record in the batch."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(cast(str, m.topic()), cast(int, m.partition()))] = cast(int, m.offset())
    return [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]


def _produce(producer: Producer, r: Record) -> None:
    while True:
        try:
            if r.partition is None:
                producer.produce(r.topic, r.value, r.key, headers=cast(Any, r.headers))
            else:
                producer.produce(
                    r.topic, r.value, r.key, partition=r.partition, headers=cast(Any, r.headers)
                )
            return
        except BufferError:
            producer.poll(0.05)  # the local queue is full: let deliveries drain it


def _retrying(
    call: Callable[[], None], stopping: threading.Event, attempts: int | None = None
) -> None:
    """``call`` again while it fails with a retriable error (a timeout while the broker is
    down is one): an outage is waited out, never turned into an abort, unless the loop stops."""
    tries = 0
    while True:
        tries += 1
        try:
            call()
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            last = attempts is not None and tries >= attempts
            if not error.retriable() or last or stopping.is_set():
                raise
            log.warning("retrying after a retriable error: %s", error)
            time.sleep(min(0.1 * tries, 2.0))
