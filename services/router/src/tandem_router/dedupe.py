"""The memory of routed tasks, per input partition, so a task submitted twice is routed once.

It is durable: each routing also writes a changelog entry (seen_log.py) in the batch's
transaction, and a partition's memory is read back from the changelog when the group assigns
the partition, after a restart, a rebalance or a scale-out alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

# Offsets fit in 40 bits (a trillion records a partition); the seconds of the routing time
# sit above them, so an entry is one int: this map holds up to millions of entries.
_OFFSET_BITS = 40
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1


class SeenTasks:
    """Task ids of each owned partition, each with the offset of the record that routed it.

    The offset tells a duplicate from a redelivery: after an aborted transaction or a
    rebalance the same record comes back and must be routed again (its outputs carry the same
    event ids), while another record for a task already routed is a duplicate and is dropped.
    Entries older than the retention are forgotten; past the capacity, the oldest go first
    (``evicted`` counts them: the retention then holds only for the ids kept).
    """

    def __init__(
        self,
        capacity: int = 1_000_000,
        retention_s: float = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.retention_s = retention_s
        self.clock = clock
        self.evicted = 0
        # Each partition's ids in the order they were routed (dicts keep insertion order).
        self._partitions: dict[int, dict[str, int]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, task_id: object) -> bool:
        return any(task_id in seen for seen in self._partitions.values())

    def claim(self, task_id: str, partition: int, offset: int) -> bool:
        """True if this record should be routed; False if another record already routed the
        task within the retention."""
        seen = self._partitions.setdefault(partition, {})
        now = self.clock()
        self._expire(seen, now)
        known = seen.get(task_id)
        if known is not None:
            return known & _OFFSET_MASK == offset
        self._add(seen, task_id, offset, now)
        return True

    def load(self, partition: int, entries: Iterable[tuple[str, int, float]]) -> None:
        """Take a partition's memory from its changelog: (task id, offset, routed at seconds),
        oldest first; a later entry of an id replaces an earlier one."""
        seen: dict[str, int] = {}
        self.forget(partition)
        self._partitions[partition] = seen
        horizon = self.clock() - self.retention_s
        for task_id, offset, at in entries:
            if at < horizon:
                continue
            if seen.pop(task_id, None) is not None:
                self._size -= 1
            self._add(seen, task_id, offset, at)

    def forget(self, partition: int) -> None:
        """The partition went to another member: its next owner loads it."""
        self._size -= len(self._partitions.pop(partition, {}))

    def _add(self, seen: dict[str, int], task_id: str, offset: int, at: float) -> None:
        seen[task_id] = (int(at) << _OFFSET_BITS) | offset
        self._size += 1
        while self._size > self.capacity:
            oldest = max(self._partitions.values(), key=len)
            del oldest[next(iter(oldest))]
            self._size -= 1
            self.evicted += 1

    def _expire(self, seen: dict[str, int], now: float) -> None:
        horizon = int(now - self.retention_s)
        while seen:
            task_id = next(iter(seen))
            if seen[task_id] >> _OFFSET_BITS >= horizon:
                return
            del seen[task_id]
            self._size -= 1
