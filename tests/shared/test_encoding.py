"""Events are written by orjson where it writes what pydantic would: byte for byte the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tandem_shared.envelope import encode_data
from tandem_shared.events import (
    EVENT_TYPES,
    Contribution,
    ControlChanged,
    EventData,
    ModelRef,
    Score,
    TaskScored,
    TaskSubmitted,
)

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past 64 bits: orjson refuses
    st.sampled_from([0.0, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 2**53 + 1]),
)
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text())
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
# Aware only: an event's times carry their offset (a naive one is refused when it is made).
times = st.datetimes(
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    )
)


def _same(data: EventData) -> None:
    assert encode_data(data) == data.model_dump_json().encode()


@settings(max_examples=300)
@given(
    features=st.dictionaries(st.text(), scalars, max_size=6),
    context=st.dictionaries(st.text(), json_like, max_size=4),
    extra=st.dictionaries(st.sampled_from(["origin", "batch", "x"]), json_like, max_size=2),
)
def test_a_task_is_written_as_pydantic_writes_it(
    features: dict[str, Any], context: dict[str, Any], extra: dict[str, Any]
) -> None:
    task = TaskSubmitted(task_id="t", task_type="k", features=features, context=context, **extra)
    _same(task)


@settings(max_examples=200)
@given(
    submitted=times,
    scored=times,
    confidence=st.floats(min_value=0.0, max_value=1.0),
    probability=st.floats(allow_nan=True, allow_infinity=True),
)
def test_times_and_nested_models_are_written_as_pydantic_writes_them(
    submitted: datetime, scored: datetime, confidence: float, probability: float
) -> None:
    score = Score(
        model=ModelRef(name="m", version="1"),
        prediction="yes",
        probabilities={"yes": probability, "no": 1.0},
        confidence=confidence,
        explanation=[Contribution(feature="a", contribution=-0.25)],
    )
    task = TaskSubmitted(task_id="t", task_type="k", features={"a": 1})
    _same(TaskScored(task=task, score=score, submitted_at=submitted, scored_at=scored))


def test_what_orjson_does_not_write_is_left_to_pydantic() -> None:
    for odd in ({1, 2}, Decimal("1.5"), b"bytes", {1: "int key"}, 2**80):
        _same(
            ControlChanged(
                kind="policy",
                name="p",
                value={"odd": odd},
                changed_by="ana",
                changed_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )


def _models(root: type[EventData]) -> list[type[EventData]]:
    return [root, *(m for sub in root.__subclasses__() for m in _models(sub))]


def test_no_event_model_changes_how_its_fields_are_written() -> None:
    # orjson writes a model's fields as they are: an alias, an excluded field, a serializer or
    # a computed field would make the two writers differ.
    assert set(EVENT_TYPES.values()) <= set(_models(EventData))
    for model in _models(EventData):
        decorators = model.__pydantic_decorators__
        assert not decorators.field_serializers and not decorators.model_serializers, model
        assert not model.model_computed_fields, model
        for name, info in model.model_fields.items():
            assert info.alias is None and info.serialization_alias is None, (model, name)
            assert not info.exclude, (model, name)
