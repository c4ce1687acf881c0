"""Inter-reviewer agreement beyond chance, where a task was judged by several people: Cohen's
kappa for two raters, Fleiss' kappa for more (in its form for items judged by different
numbers of raters). Pure: labels in, figures out; the outcomes report and the feedback export
both use it."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel


@dataclass(frozen=True)
class Judged:
    """One task as several people judged it: (reviewer, label) in the order given."""

    task_type: str
    labels: tuple[tuple[str, str], ...]


class Agreement(BaseModel):
    """Agreement on the tasks several people judged, for one task type or one reviewer (with
    the others who judged the same tasks)."""

    scope: Literal["task_type", "reviewer"]
    key: str
    tasks: int
    pairs: int  # pairs of labels given to one task by two people
    observed: float | None  # the share of those pairs that agree
    cohen_kappa: float | None  # tasks judged by two (for a reviewer: each pair with them)
    fleiss_kappa: float | None  # tasks judged by three or more (task types only)


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Agreement of two raters beyond chance; None when chance alone explains it all (both
    always gave one and the same label) or there are no pairs."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    chance = sum(first[k] * second[k] for k in first) / (n * n)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float | None:
    """Agreement of many raters beyond chance over items each judged by two or more (not
    necessarily the same number); None without such items or when chance explains it all."""
    rated = [item for item in items if len(item) >= 2]
    if not rated:
        return None
    per_item = []
    totals: Counter[str] = Counter()
    for item in rated:
        counts = Counter(item)
        n = len(item)
        per_item.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
        totals.update(counts)
    observed = sum(per_item) / len(per_item)
    all_labels = sum(totals.values())
    chance = sum((c / all_labels) ** 2 for c in totals.values())
    return None if chance == 1 else (observed - chance) / (1 - chance)


def agreement(judged: Iterable[Judged]) -> list[Agreement]:
    """By task type (Cohen over the tasks two people judged, Fleiss over those three or more
    judged), then by reviewer (Cohen over the pairs of their label and another's on one
    task); tasks judged once are left out."""
    several = [j for j in judged if len({r for r, _ in j.labels}) >= 2]
    by_type: dict[str, list[Judged]] = defaultdict(list)
    by_reviewer: dict[str, list[tuple[str, str]]] = defaultdict(list)
    tasks_of: dict[str, int] = Counter()
    for j in several:
        by_type[j.task_type].append(j)
        for reviewer, label in j.labels:
            tasks_of[reviewer] += 1
            by_reviewer[reviewer] += [(label, other) for r, other in j.labels if r != reviewer]
    rows = [_of_type(key, by_type[key]) for key in sorted(by_type)]
    rows += [
        _row("reviewer", key, tasks_of[key], by_reviewer[key], cohen_kappa(by_reviewer[key]), None)
        for key in sorted(by_reviewer)
    ]
    return rows


def _of_type(key: str, judged: list[Judged]) -> Agreement:
    pairs = [
        (a, b) for j in judged for i, (_, a) in enumerate(j.labels) for _, b in j.labels[i + 1 :]
    ]
    two = [(j.labels[0][1], j.labels[1][1]) for j in judged if len(j.labels) == 2]
    more = [[label for _, label in j.labels] for j in judged if len(j.labels) > 2]
    return _row("task_type", key, len(judged), pairs, cohen_kappa(two), fleiss_kappa(more))


def _row(
    scope: Literal["task_type", "reviewer"],
    key: str,
    tasks: int,
    pairs: list[tuple[str, str]],
    cohen: float | None,
    fleiss: float | None,
) -> Agreement:
    return Agreement(
        scope=scope,
        key=key,
        tasks=tasks,
        pairs=len(pairs),
        observed=_rounded(sum(a == b for a, b in pairs) / len(pairs)) if pairs else None,
        cohen_kappa=_rounded(cohen),
        fleiss_kappa=_rounded(fleiss),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
