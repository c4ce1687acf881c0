"""A bounded memory of the tasks this process routed, so a task submitted twice is routed once."""

from __future__ import annotations

from collections import OrderedDict


class SeenTasks:
    """Least-recently-used task ids, each with the record (partition, offset) that routed it.

    The record position tells a duplicate from a redelivery: after a failed publish or a
    rebalance the same record comes back and must be routed again (its outputs carry the same
    event ids), while another record for a task already routed is a duplicate and is dropped.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._seen

    def claim(self, task_id: str, partition: int, offset: int) -> bool:
        """True if this record should be routed; False if another record already routed the task."""
        position = _pack(partition, offset)
        known = self._seen.get(task_id)
        if known is not None:
            self._seen.move_to_end(task_id)
            return known == position
        self._seen[task_id] = position
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


def _pack(partition: int, offset: int) -> int:
    # One int per entry instead of a tuple: this map holds up to millions of entries.
    return (partition << 48) | offset
