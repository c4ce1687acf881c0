"""The bounded memory of routed tasks."""

from __future__ import annotations

import pytest
from tandem_router.dedupe import SeenTasks


def test_a_second_record_for_the_same_task_is_a_duplicate() -> None:
    seen = SeenTasks()
    assert seen.claim("a", partition=0, offset=10)
    assert not seen.claim("a", partition=0, offset=11)
    assert not seen.claim("a", partition=1, offset=10)


def test_the_same_record_delivered_again_is_routed_again() -> None:
    # After a failed publish or a rebalance the record comes back; dropping it would lose the task.
    seen = SeenTasks()
    assert seen.claim("a", partition=2, offset=7)
    assert seen.claim("a", partition=2, offset=7)


def test_the_least_recently_used_task_is_forgotten_first() -> None:
    seen = SeenTasks(capacity=2)
    seen.claim("a", 0, 1)
    seen.claim("b", 0, 2)
    assert not seen.claim("a", 0, 3)  # a duplicate of "a" refreshes it
    seen.claim("c", 0, 4)
    assert len(seen) == 2
    assert "a" in seen and "c" in seen and "b" not in seen
    assert seen.claim("b", 0, 5)  # forgotten, so routed again (with the same event ids)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SeenTasks(capacity=0)
