"""The memory of routed tasks, per partition, with a retention and a capacity."""

from __future__ import annotations

import pytest
from tandem_router.dedupe import SeenTasks


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_second_record_for_the_same_task_is_a_duplicate() -> None:
    seen = SeenTasks()
    assert seen.claim("a", partition=0, offset=10)
    assert not seen.claim("a", partition=0, offset=11)


def test_the_same_record_delivered_again_is_routed_again() -> None:
    # After an aborted transaction or a rebalance the record comes back; dropping it would
    # lose the task.
    seen = SeenTasks()
    assert seen.claim("a", partition=2, offset=7)
    assert seen.claim("a", partition=2, offset=7)


def test_a_task_id_is_forgotten_after_the_retention() -> None:
    clock = Clock()
    seen = SeenTasks(retention_s=60, clock=clock)
    assert seen.claim("a", 0, 1)
    clock.now += 30
    assert not seen.claim("a", 0, 2)
    clock.now += 31
    assert seen.claim("a", 0, 3)  # past the retention: a new submission


def test_past_the_capacity_the_oldest_go_first_and_are_counted() -> None:
    seen = SeenTasks(capacity=2)
    seen.claim("a", 0, 1)
    seen.claim("b", 0, 2)
    seen.claim("c", 0, 3)
    assert len(seen) == 2 and seen.evicted == 1
    assert "a" not in seen and "b" in seen and "c" in seen


def test_a_partition_is_loaded_from_its_changelog_and_forgotten_when_revoked() -> None:
    clock = Clock()
    seen = SeenTasks(retention_s=100, clock=clock)
    seen.claim("live", 1, 5)
    seen.load(
        1,
        [
            ("old", 1, clock.now - 200),  # past the retention: not loaded
            ("a", 2, clock.now - 50),
            ("a", 9, clock.now - 10),  # the later entry of an id wins
            ("b", 3, clock.now - 5),
        ],
    )
    assert len(seen) == 2 and "live" not in seen and "old" not in seen
    assert not seen.claim("a", 1, 2)
    assert seen.claim("a", 1, 9)
    seen.forget(1)
    assert len(seen) == 0 and "b" not in seen


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SeenTasks(capacity=0)
