"""A window of scored tasks routed as the router routes them, and what the what-if counts."""

from __future__ import annotations

from collections.abc import Sequence

from tandem_shared.events import TaskScored

from tandem_policy.policy import Policy, Routing, decide

Routed = list[tuple[TaskScored, Routing]]


def route_all(policy: Policy, tasks: Sequence[TaskScored]) -> Routed:
    """Each task under ``policy`` at its scoring time, the rules tested for all of them at
    once, as the router does."""
    fired = policy.fired([task.task for task in tasks])
    return [
        (task, decide(policy, task, now=task.scored_at, fired=hits))
        for task, hits in zip(tasks, fired, strict=True)
    ]


def reviewed(routing: Routing) -> bool:
    """Whether it puts a review in front of a person: a QA-sampled automatic decision does."""
    return routing.route != "auto" or routing.qa_sample


def share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0
