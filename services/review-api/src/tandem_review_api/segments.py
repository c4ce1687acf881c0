"""Fair outcomes by segment, live: for each task type, each segment's automation rate,
override rate and QA accuracy against the task type's whole, over a recent window. Pure: the
service sets them as gauges (tandem_segment_*) that the alert TandemSegmentOutcomeGap reads,
with the bounds and the samples it needs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tandem_shared.events import DecisionMade

from tandem_review_api.stats import COMPARED, Group, ReviewFacts, grouped

# What each rate is a share of: its samples.
SAMPLES = {
    "automation_rate": "decisions",
    "override_rate": "by_people",
    "qa_accuracy": "qa_samples_reviewed",
}


@dataclass(frozen=True)
class Standing:
    """One rate of one segment of one task type, against the task type's."""

    task_type: str
    attribute: str
    segment: str
    measure: str  # one of COMPARED
    rate: float
    samples: int
    gap: float  # the segment's rate minus the whole's


def standings(
    decisions: Sequence[DecisionMade],
    reviews: Sequence[ReviewFacts],
    most: int,
) -> list[Standing]:
    """Per task type, the ``most`` largest segments of each attribute (by decisions; the rest
    would make a metric's labels unbounded), each rate that both it and the whole have."""
    decided: dict[str, list[DecisionMade]] = defaultdict(list)
    for d in decisions:
        decided[d.task_type].append(d)
    reviewed: dict[str, list[ReviewFacts]] = defaultdict(list)
    for r in reviews:
        reviewed[r.task_type].append(r)
    found = []
    for task_type in sorted(set(decided) | set(reviewed)):
        _, groups = grouped(decided[task_type], reviewed[task_type], "segment", 0.0)
        for group in _largest(groups, most):
            attribute, _, segment = group.key.partition("=")
            found.extend(_standings(task_type, attribute, segment, group))
    return found


def _largest(groups: list[Group], most: int) -> list[Group]:
    by_attribute: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        by_attribute[group.key.partition("=")[0]].append(group)
    return [
        group
        for members in by_attribute.values()
        for group in sorted(members, key=lambda g: (-g.decisions, g.key))[:most]
    ]


def _standings(task_type: str, attribute: str, segment: str, group: Group) -> list[Standing]:
    out = []
    for measure in COMPARED:
        rate, gap = getattr(group, measure), group.disparity[measure].difference
        if rate is None or gap is None:
            continue
        samples = int(getattr(group, SAMPLES[measure]))
        out.append(Standing(task_type, attribute, segment, measure, rate, samples, gap))
    return out
