"""Rules tested for a whole batch (numpy columns) hold exactly when they hold task by task."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tandem_policy.columns import ColumnRules
from tandem_policy.policy import Rule

from tests.policy.factories import policy, scored

KEYS = ["radius", "area", "texture"]
HUGE = 2**53

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0.0, -0.0, 1.0, 2.5, HUGE, HUGE + 1, -HUGE - 1, float(HUGE)]),
)
values = st.one_of(
    numbers,
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    # A context may hold any JSON: a list or an object is in no list of scalars.
    st.lists(st.one_of(st.integers(-2, 2), st.text(max_size=1)), max_size=2),
    st.dictionaries(st.text(max_size=1), st.integers(-2, 2), max_size=2),
)
bounds = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0, 1.0, 2.5, HUGE, float(HUGE)]),
)


def leaf(side: str, key: str) -> st.SearchStrategy[dict[str, Any]]:
    ordered = st.fixed_dictionaries(
        {side: st.just(key), "op": st.sampled_from(["gt", "ge", "lt", "le"]), "value": bounds}
    )
    member = st.fixed_dictionaries(
        {
            side: st.just(key),
            "op": st.sampled_from(["in", "not_in"]),
            "value": st.lists(st.one_of(bounds, st.text(max_size=3), st.booleans()), min_size=1),
        }
    )
    equal = st.fixed_dictionaries(
        {side: st.just(key), "op": st.sampled_from(["eq", "ne"]), "value": bounds}
    )
    return st.one_of(ordered, ordered, member, equal)


conditions = st.sampled_from(["feature", "context"]).flatmap(
    lambda side: st.sampled_from(KEYS).flatmap(lambda key: leaf(side, key))
)
rules = st.one_of(
    conditions,
    conditions,
    st.builds(lambda parts: {"any": parts}, st.lists(conditions, min_size=1, max_size=3)),
    st.builds(lambda parts: {"all": parts}, st.lists(conditions, min_size=1, max_size=3)),
)
tasks = st.tuples(
    st.dictionaries(st.sampled_from(KEYS), values),
    st.dictionaries(st.sampled_from(KEYS), values),
)


def rule_set(documents: list[dict[str, Any]]) -> ColumnRules:
    made = [Rule.model_validate({**d, "reason": f"r{i}"}) for i, d in enumerate(documents)]
    return ColumnRules([(r.column, r.test) for r in made])


@settings(max_examples=300)
@given(documents=st.lists(rules, max_size=8), batch=st.lists(tasks, max_size=12))
def test_a_batch_fires_the_rules_each_task_fires_alone(
    documents: list[dict[str, Any]], batch: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    columns = rule_set(documents)
    assert columns.fired(batch) == [columns.one(f, c) for f, c in batch]


def test_a_batch_by_hand() -> None:
    columns = rule_set(
        [
            {"feature": "radius", "op": "gt", "value": 20},
            {"context": "clinic", "op": "in", "value": ["north"]},
            {"feature": "radius", "op": "le", "value": 5},
            {"feature": "area", "op": "ge", "value": 1000},
        ]
    )
    batch: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"radius": 25.0, "area": 1000}, {"clinic": "north"}),  # 0, 1, 3
        ({"radius": 5, "area": 999.9}, {}),  # 2: an int compares as a number
        ({"radius": math.inf, "area": math.nan}, {"clinic": "south"}),  # not finite: none
        ({"radius": True, "area": "1000"}, {"clinic": None}),  # a bool, a text: none
        ({"radius": HUGE + 1}, {}),  # exact beyond float64: 0 (the int is above 20)
        ({}, {"clinic": "north"}),  # missing features: 1 only
    ]
    assert columns.fired(batch) == [(0, 1, 3), (2,), (), (), (0,), (1,)]


def test_policy_fired_follows_each_task_type_and_skips_types_without_rules() -> None:
    rules = [
        {"feature": "radius", "op": "gt", "value": 20, "reason": "big"},
        {"context": "clinic", "op": "eq", "value": "north", "reason": "north"},
    ]
    routed = policy(rules=[Rule.model_validate(r) for r in rules])
    batch = [
        scored(features={"radius": 25.0}, context={"clinic": "north"}).task,
        scored(task_type="unknown", features={"radius": 25.0}).task,
        scored(features={"radius": 10.0}).task,
    ]
    assert routed.fired(batch) == [(0, 1), None, ()]
