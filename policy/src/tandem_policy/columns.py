"""A task type's rules tested over a whole batch of tasks at once.

Most rules of a grown policy compare one number of the task with a bound, or look a value up
in a list. Tested one task at a time, each is a Python call per task, and with fifty rules that
was most of the router's time. Here each comparison is one numpy comparison over the batch's
column of that number, and each membership one set lookup per value of the column, with no
call; only ``all``/``any`` rules still run task by task. The answer is exactly what the rules'
own tests give task by task, which a property test holds them to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Test = Callable[[dict[str, Any], dict[str, Any]], bool]
Values = tuple[dict[str, Any], dict[str, Any]]  # a task's features and context

_UFUNC: dict[str, Callable[[npt.NDArray[np.float64], float], npt.NDArray[np.bool_]]] = {
    "gt": np.greater,
    "ge": np.greater_equal,
    "lt": np.less,
    "le": np.less_equal,
}
# Beyond 2**53 an int is not exactly a float64: a task holding one is tested task by task.
_EXACT = 2**53
_FLOATS = {float}


@dataclass(frozen=True)
class Bound:
    """A rule that compares a feature (or a context value) with a number: ``value op bound``."""

    on_feature: bool
    key: str
    op: str  # gt, ge, lt, le
    bound: float


@dataclass(frozen=True)
class Member:
    """A rule that looks a feature (or a context value) up in a list: it holds when the value
    is in ``values`` (eq, in) or, with ``member`` false, when it is not (ne, not_in); a missing
    value meets neither."""

    on_feature: bool
    key: str
    values: tuple[Any, ...]
    member: bool


# JSON's scalars: looked up in a set, they are found exactly when a list's ``in`` finds them
# (the same equality: 1 == 1.0 == True). Others (a list, an object) are looked up in the list.
_HASHED = {str, int, float, bool}


class _Inexact(Exception):
    """A value the column cannot hold exactly."""


def _number(value: object) -> float:
    """What a comparison sees: a finite float or int as float, anything else as NaN (which no
    comparison meets, as a missing or non-numeric value meets no rule)."""
    if type(value) is float:
        return value if -math.inf < value < math.inf else math.nan
    if type(value) is int:  # exact types: a bool is not a number here
        if -_EXACT <= value <= _EXACT:
            return float(value)
        raise _Inexact
    return math.nan


def _column(values: list[Any]) -> npt.NDArray[np.float64]:
    if set(map(type, values)) == _FLOATS:  # the usual case, without a Python call per value
        column = np.array(values, dtype=np.float64)
        column[~np.isfinite(column)] = math.nan
        return column
    return np.fromiter(map(_number, values), dtype=np.float64, count=len(values))


class ColumnRules:
    """Rules in policy order: each a ``Bound`` or a ``Member`` (tested by column), or else a
    ``Test`` (run task by task)."""

    def __init__(self, rules: Sequence[tuple[Bound | Member | None, Test]]) -> None:
        self.tests = [test for _, test in rules]
        self.by_key: dict[tuple[bool, str], list[tuple[int, Bound]]] = {}
        # Per value looked up: each membership's position, its values as a set and as given.
        self.members: dict[tuple[bool, str], list[tuple[int, Member, frozenset[Any]]]] = {}
        self.others: list[tuple[int, Test]] = []
        for index, (rule, test) in enumerate(rules):
            if rule is None:
                self.others.append((index, test))
            elif isinstance(rule, Member):
                found = frozenset(v for v in rule.values if type(v) in _HASHED)
                self.members.setdefault((rule.on_feature, rule.key), []).append(
                    (index, rule, found)
                )
            else:
                key = (rule.on_feature, rule.key)
                self.by_key.setdefault(key, []).append((index, rule))

    def one(self, features: dict[str, Any], context: dict[str, Any]) -> tuple[int, ...]:
        """The positions of the rules that hold for one task."""
        return tuple(i for i, test in enumerate(self.tests) if test(features, context))

    def fired(self, tasks: Sequence[Values]) -> list[tuple[int, ...]]:
        """For each task, the positions of the rules that hold, in policy order."""
        hits: list[list[int]] = [[] for _ in tasks]
        one_by_one: set[int] = set()
        for (on_feature, key), bounds in self.by_key.items():
            side = 0 if on_feature else 1
            values = [task[side].get(key) for task in tasks]
            try:
                column = _column(values)
            except _Inexact:
                one_by_one.update(row for row, v in enumerate(values) if type(v) is int)
                column = np.array(
                    [math.nan if type(v) is int else _number(v) for v in values], dtype=np.float64
                )
            for index, rule in bounds:
                for row in np.flatnonzero(_UFUNC[rule.op](column, rule.bound)).tolist():
                    hits[row].append(index)
        for (on_feature, key), members in self.members.items():
            side = 0 if on_feature else 1
            values = [task[side].get(key) for task in tasks]
            for index, member, found in members:
                listed, wanted = member.values, member.member
                for row, value in enumerate(values):
                    if value is None:
                        continue
                    within = value in found if type(value) in _HASHED else value in listed
                    if within is wanted:
                        hits[row].append(index)
        for row, (features, context) in enumerate(tasks):
            if row in one_by_one:
                hits[row] = list(self.one(features, context))
                continue
            for index, test in self.others:
                if test(features, context):
                    hits[row].append(index)
        return [tuple(sorted(row)) for row in hits]
