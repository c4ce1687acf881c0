"""The transactional outbox: what the review API publishes is written as rows in the database
transaction of the change it reports, and a relay sends the rows to Kafka afterwards.

A request succeeds when the database commits; a Kafka outage delays the events, never loses
them. The relay sends rows in id order and deletes them only once the broker acknowledged every
one, so a crash in between sends some twice (with the same event ids: the sinks dedupe)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, delete, event, func, literal, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from tandem_shared.clients import MAX_RECORD_BYTES
from tandem_shared.envelope import utcnow
from tandem_shared.kafka import Publisher, Record

from tandem_review_api.errors import Unprocessable
from tandem_review_api.tables import outbox
from tandem_review_api.telemetry import OutboxMetrics

log = logging.getLogger(__name__)

# Sends the records and returns once the broker acknowledged every one; raises otherwise.
Send = Callable[[Sequence[Record]], Awaitable[None]]

# The PostgreSQL advisory lock the relaying replica holds: one relay at a time keeps the rows
# of a key in id order (two replicas taking separate batches could overtake each other).
RELAY_LOCK = int.from_bytes(hashlib.sha256(b"tandem/review-api/outbox").digest()[:8], signed=True)


@dataclass(frozen=True)
class Backlog:
    depth: int
    oldest_age_s: float


class Outbox:
    def __init__(
        self,
        engine: AsyncEngine,
        max_record_bytes: int = MAX_RECORD_BYTES,
        statements: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine
        # The relay's turn: autocommit connections (see ReviewStore).
        self._autocommit = statements or engine.execution_options(isolation_level="AUTOCOMMIT")
        self.max_record_bytes = max_record_bytes
        # Set when a transaction that added rows commits: the relay sends them at once.
        self.written = asyncio.Event()
        self._on_commit = lambda _session: self.written.set()

    def rows(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        """The outbox rows of ``records``, for a write of the caller's own (then ``notify``
        once it committed); Unprocessable for a record Kafka would refuse."""
        for record in records:
            if (size := record.size()) > self.max_record_bytes:
                # Kafka would refuse it for ever, and every row after it would wait.
                raise Unprocessable(
                    f"the event for {record.key.decode(errors='replace')} would be {size} bytes;"
                    f" Kafka takes at most {self.max_record_bytes}"
                )
        now = utcnow()  # the wall clock, whatever time the caller reasons in
        return [_row(record, now) for record in records]

    def notify(self) -> None:
        """Rows were committed: the relay sends them at once."""
        self.written.set()

    async def add(self, s: AsyncSession, records: Sequence[Record]) -> None:
        """Write ``records`` in the caller's transaction; they leave once it commits."""
        # One insert each, in order: the ids they get are the order they are sent in.
        for row in self.rows(records):
            await s.execute(outbox.insert().values(row))
        if records and not event.contains(s.sync_session, "after_commit", self._on_commit):
            event.listen(s.sync_session, "after_commit", self._on_commit)

    async def take(self, limit: int, c: AsyncConnection | None = None) -> list[tuple[int, Record]]:
        """The oldest ``limit`` rows waiting, in the order they are to be sent; on ``c`` (the
        relay's turn) or a connection of its own."""
        if c is None:
            async with self.engine.connect() as own:
                return await self.take(limit, own)
        query = select(outbox).order_by(outbox.c.id).limit(limit)
        taken = [(row.id, _record(row)) for row in await c.execute(query)]
        await c.commit()  # no transaction stays open while they are sent (SQLite's lock)
        return taken

    async def remove(self, ids: Sequence[int], c: AsyncConnection | None = None) -> None:
        # By id, not "up to the last id": on PostgreSQL a transaction holding a lower id can
        # commit after the rows were taken, and its rows are still to be sent.
        if c is None:
            async with self.engine.connect() as own:
                await self.remove(ids, own)
            return
        await c.execute(delete(outbox).where(outbox.c.id.in_(ids)))
        await c.commit()

    async def backlog(self, now: datetime) -> Backlog:
        async with self.engine.connect() as c:
            depth, oldest = (
                await c.execute(select(func.count(), func.min(outbox.c.created_at)))
            ).one()
        age = 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)
        return Backlog(int(depth), age)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[AsyncConnection | None]:
        """A connection to relay on when this replica relays now, else None. On PostgreSQL,
        one replica at a time holds a session advisory lock (released with its connection
        should the process die); the connection is in autocommit, so taking and removing rows
        are a round trip each, and no transaction stays open while a batch is sent. SQLite
        serves one process, whose relay is a single task."""
        if self.engine.dialect.name != "postgresql":
            async with self.engine.connect() as c:
                yield c
            return
        key = literal(RELAY_LOCK, BigInteger())
        async with self._autocommit.connect() as c:
            mine = bool(await c.scalar(select(func.pg_try_advisory_lock(key))))
            try:
                yield c if mine else None
            finally:
                if mine:
                    await c.execute(select(func.pg_advisory_unlock(key)))


def _row(record: Record, now: datetime) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "key": record.key,
        "value": record.value,
        "headers": [[name, base64.b64encode(value).decode()] for name, value in record.headers],
        "created_at": now,
    }


def _record(row: Row[Any]) -> Record:
    headers = [(str(name), base64.b64decode(value)) for name, value in row.headers]
    return Record(row.topic, bytes(row.key), bytes(row.value), headers)


def sender(publisher: Publisher) -> Send:
    """Send through the service's producer (idempotent, acks=all) and wait for every ack."""

    async def send(records: Sequence[Record]) -> None:
        await Publisher.flush(await publisher.send_records(records))

    return send


class Relay:
    """Sends what the outbox holds: woken by each commit that added rows, and every
    ``poll_s`` besides; after a failure it backs off (``backoff_s``, doubling up to
    ``max_backoff_s``) and tries again for as long as the outage lasts. Nothing is dropped."""

    def __init__(
        self,
        box: Outbox,
        send: Send,
        metrics: OutboxMetrics,
        *,
        # Rows a round takes: a round's waits (the database, Kafka's acks) cost the same for
        # many rows as for few, so under load a bigger round is what keeps the relay up.
        batch: int = 2000,
        poll_s: float = 0.5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.outbox = box
        self.send = send
        self.metrics = metrics
        self.batch = batch
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def relay_once(self) -> int:
        """Send the oldest rows waiting (a batch at most) and remove them once acknowledged;
        how many were sent (0 too when another replica relays now)."""
        async with self.outbox.turn() as c:
            if c is None:
                return 0
            waiting = await self.outbox.take(self.batch, c)
            if not waiting:
                return 0
            try:
                # Never cut short: the producer retries what it holds, and a batch given up
                # here while still in the producer would arrive twice.
                await self.send([record for _, record in waiting])
            except Exception:
                self.metrics.publish_failures.inc()
                raise
            self.metrics.published.inc(len(waiting))
            await self.outbox.remove([row_id for row_id, _ in waiting], c)
        return len(waiting)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self.outbox.written.clear()  # a commit from here on brings the next round at once
            try:
                sent = await self.relay_once()
            except Exception:
                failures += 1
                delay = min(self.backoff_s * 2 ** (failures - 1), self.max_backoff_s)
                log.warning(
                    "relaying the outbox failed (attempt %d); trying again in %.1f s",
                    failures,
                    delay,
                    exc_info=True,
                )
                await _first_of([stop], delay)
                continue
            failures = 0
            if sent < self.batch:  # a full batch: more may be waiting, go on at once
                await _first_of([stop, self.outbox.written], self.poll_s)
        await self._drain()

    async def _drain(self) -> None:
        """Stopping: what was committed by now goes out first (within the grace stop() gives),
        rather than at the next start or with another replica."""
        try:
            while await self.relay_once() == self.batch:
                pass
        except Exception:
            log.warning("relaying the outbox at stop failed; its rows stay", exc_info=True)

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.run(self._stop), name="outbox relay")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Let the round in flight finish and send what is waiting; a round still waiting for
        Kafka after ``grace_s`` is cancelled, and its rows stay for the next start (or another
        replica)."""
        if self._task is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait({self._task}, timeout=grace_s)
        if not done:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None


async def _first_of(events: Sequence[asyncio.Event], seconds: float) -> None:
    """Wait until one of ``events`` is set, or ``seconds`` have passed."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
