"""The ledger's verification as a background job: on the sink's timer, or when someone asks for
one, never two at a time; the latest results are kept for the API to read.

A whole verification reads every entry, which takes seconds to minutes: no request waits for
one. The timer verifies what was added since the last good verification, and every so many
rounds the whole ledger; an asked-for verification is always whole, and starts after the ask.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tandem_shared.envelope import utcnow

from tandem_audit_sink.checkpoint import Checkpoint
from tandem_audit_sink.shards import ShardedLedger
from tandem_audit_sink.telemetry import AuditMetrics
from tandem_audit_sink.verify import VerifyResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verification:
    """A verification that ran to its end: the ledger was good up to ``result.tree_size``, or
    ``result.failure`` names the first bad entry."""

    whole: bool
    requested: bool  # asked for, not the timer's
    started_at: datetime
    finished_at: datetime
    from_size: int  # the tree sizes (all shards) of the trusted checkpoints it went on from
    result: VerifyResult

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class Running:
    whole: bool
    requested: bool
    started_at: datetime
    entries: int = 0  # checked so far


class Verifications:
    """Runs the ledger's verifications one at a time and keeps the latest results."""

    def __init__(
        self,
        ledger: ShardedLedger,
        metrics: AuditMetrics,
        chunk_size: int = 1000,
        whole_every: int = 12,
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._chunk_size = chunk_size
        self._whole_every = whole_every
        self._rounds = itertools.count()
        self._one_at_a_time = asyncio.Lock()
        # per shard, the newest checkpoint a good run reached
        self._trusted: dict[int, Checkpoint] = {}
        self._asked_at: datetime | None = None  # of the one asked for and not started yet
        self._tasks: set[asyncio.Task[Verification]] = set()  # asked for, waiting or running
        self.running: Running | None = None
        self.latest: Verification | None = None
        self.latest_whole: Verification | None = None

    @property
    def asked_at(self) -> datetime | None:
        """When the whole verification that has yet to start was asked for, if one was."""
        return self._asked_at

    async def on_time(self) -> None:
        """The timer's round: what is new since the last good run, now and then everything."""
        whole = next(self._rounds) % self._whole_every == 0
        await self._run(whole=whole, requested=False)

    def request(self) -> datetime:
        """Ask for a whole verification that starts from now on; when it was asked for. Asks
        made before it starts share it, so no more than one waits behind the one running."""
        if self._asked_at is None:
            self._asked_at = utcnow()
            task = asyncio.create_task(self._run(whole=True, requested=True))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_log_if_failed)
        return self._asked_at

    async def _run(self, whole: bool, requested: bool) -> Verification:
        async with self._one_at_a_time:
            if requested:  # started: a later ask needs a later start
                self._asked_at = None
            running = self.running = Running(whole, requested, utcnow())

            def checked(entries: int) -> None:
                running.entries += entries

            try:
                latest = [await s.latest_checkpoint() for s in self._ledger.shards]
                since = {} if whole else dict(self._trusted)
                sharded = await self._ledger.verify(self._chunk_size, since=since, on_chunk=checked)
            finally:
                self.running = None
            done = Verification(
                whole,
                requested,
                running.started_at,
                utcnow(),
                sum(c.tree_size for c in since.values()),
                sharded.combined(),
            )
            self._record(done, latest, [r.tree_size for r in sharded.shards])
        return done

    def _record(
        self, done: Verification, latest: Sequence[Checkpoint | None], sizes: Sequence[int]
    ) -> None:
        self.latest = done
        if done.whole:
            self.latest_whole = done
        result = done.result
        self._metrics.verified(result)
        if not result.ok:
            log.error("audit ledger verification failed: %s", result.failure)
            return
        self._metrics.verified_size.set(result.tree_size)
        # Each shard's checkpoint read before the run, once the run reached it, is trusted
        # from now on.
        for shard, (checkpoint, size) in enumerate(zip(latest, sizes, strict=True)):
            if checkpoint is not None and checkpoint.tree_size <= size:
                self._trusted[shard] = checkpoint

    async def close(self) -> None:
        """Stop the asked-for verifications still waiting or running."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _log_if_failed(task: asyncio.Task[Verification]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("an asked-for ledger verification failed", exc_info=task.exception())
