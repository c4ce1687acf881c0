"""The event contract: envelope round trips, strict decoding, published schemas up to date."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from tandem_shared.envelope import EnvelopeError, Event, decode, event_id
from tandem_shared.events import EVENT_TYPES, TaskSubmitted, json_schemas

ROOT = Path(__file__).resolve().parents[2]
SUBMITTED = {"tandem.task.submitted.v1": TaskSubmitted}


def test_envelope_round_trip_keeps_every_attribute() -> None:
    task = TaskSubmitted(task_id="t-1", task_type="x", features={"a": 1.5, "b": "text", "c": True})
    event = Event.derived(task, source="tests", subject="t-1", stage="submitted")
    headers = event.headers()
    names = [k for k, _ in headers]
    assert names == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "content-type",
    ]
    back = decode(event.value(), headers, SUBMITTED)
    assert back.id == event.id
    assert back.data == task
    assert back.subject == "t-1"
    assert back.time == event.time


def test_event_ids_are_deterministic_per_task_and_stage() -> None:
    assert event_id("t-1", "scored") == event_id("t-1", "scored")
    assert event_id("t-1", "scored") != event_id("t-1", "routed")
    assert event_id("t-1", "scored") != event_id("t-2", "scored")
    # Exactly RFC 4122's name-based UUID (version 5), as earlier releases wrote it.
    namespace = uuid.UUID("6f1c3a52-5d0e-4b8e-9a57-3f1f4e0c2b71")
    for task, stage in (("t-1", "scored"), ("tâche-ü", "feedback/ana"), ("x" * 200, "routed")):
        assert event_id(task, stage) == str(uuid.uuid5(namespace, f"{task}/{stage}"))


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"{}", [], "missing CloudEvents header ce_specversion"),
        (b"not json", None, "value is not JSON"),
        (b'{"task_id": "a"}', None, "does not match its schema: task_type"),
        (b'{"task_id": ""}', None, "task_id"),
        (b"[" * 100_000, None, "nested too deeply"),
    ],
)
def test_decode_names_what_is_wrong(
    value: bytes, headers: list[tuple[str, bytes]] | None, reason: str
) -> None:
    good = Event.derived(
        TaskSubmitted(task_id="t", task_type="x", features={}), source="s", subject="t", stage="x"
    )
    with pytest.raises(EnvelopeError, match=reason):
        decode(value, good.headers() if headers is None else headers, SUBMITTED)


def test_decode_refuses_an_event_type_not_expected_here() -> None:
    event = Event.derived(
        TaskSubmitted(task_id="t", task_type="x", features={}), source="s", subject="t", stage="x"
    )
    headers = [(k, b"tandem.decision.made.v1" if k == "ce_type" else v) for k, v in event.headers()]
    with pytest.raises(EnvelopeError, match="not expected on this topic"):
        decode(event.value(), headers, SUBMITTED)


def test_task_id_length_is_bounded() -> None:
    with pytest.raises(ValueError, match="at most 128"):
        TaskSubmitted(task_id="x" * 129, task_type="t", features={})


def test_published_schemas_match_the_models() -> None:
    for name, schema in json_schemas().items():
        published = json.loads((ROOT / "docs" / "schemas" / f"{name}.json").read_text())
        assert published == schema, f"docs/schemas/{name}.json is stale: run make schemas"
    assert set(json_schemas()) == set(EVENT_TYPES)


def test_a_time_without_its_offset_is_refused_at_decoding() -> None:
    """A naive time could neither be compared with Tandem's own times nor stored: refused where
    it enters, with the field named, instead of failing a handler downstream."""
    decision = {
        "task_id": "t-1",
        "task_type": "x",
        "outcome": "yes",
        "decided_by": "model",
        "confidence": 0.9,
        "model": {"name": "m", "version": "1"},
        "policy": {"name": "p", "version": 1},
        "submitted_at": "2026-11-25T10:00:00Z",
        "decided_at": "2026-11-25T10:00:05+01:00",
    }
    accepted = {"tandem.decision.made.v1": EVENT_TYPES["tandem.decision.made.v1"]}
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"d-1"),
        ("ce_source", b"tests"),
        ("ce_type", b"tandem.decision.made.v1"),
    ]
    assert decode(json.dumps(decision).encode(), headers, accepted).data
    naive = {**decision, "decided_at": "2026-11-25T10:00:05"}
    with pytest.raises(EnvelopeError, match="decided_at: Input should have timezone info"):
        decode(json.dumps(naive).encode(), headers, accepted)
