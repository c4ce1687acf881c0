"""Hostile records: what a careless or malicious producer can put on a Tandem topic.

``corpus(role)`` gives, for one topic, its records and what the topic's consumers must do with
each: dead-letter it with a reason ("dead"), or process it ("processed": a valid event, however
odd). The audit sink stores every record of every topic whatever it holds. Each record is a valid
event of the topic with one thing changed, about a task id of its own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tandem_shared.envelope import Event
from tandem_shared.events import (
    ControlChanged,
    DeadLetter,
    DecisionMade,
    EventData,
    FeedbackRecorded,
    ModelRef,
    PolicyRef,
    Score,
    TaskRouted,
    TaskScored,
    TaskSubmitted,
)

Headers = list[tuple[str, bytes | None]]
Role = Literal["submitted", "scored", "routed", "decisions", "control", "feedback", "deadletter"]
Expect = Literal["dead", "processed"]
ROLES: tuple[Role, ...] = (
    "submitted",
    "scored",
    "routed",
    "decisions",
    "control",
    "feedback",
    "deadletter",
)
# The broker's default message.max.bytes bounds a record batch; a batch of one record adds
# less than a hundred bytes to the key, value and headers. Oversized kinds fill the rest.
BROKER_LIMIT = 1_048_588
NEAR_LIMIT = BROKER_LIMIT - 1_024
AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
FEATURES: dict[str, Any] = {"mean_radius": 14.1, "mean_texture": 19.3, "worst_area": 880.6}


class RawName(str):
    """A header name sent as these bytes, not as UTF-8 text: no client sends one by itself."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("utf-8", "replace"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


@dataclass(frozen=True)
class Hostile:
    role: Role
    kind: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    expect: Expect  # by the topic's own consumers; the audit sink stores it either way

    @property
    def name(self) -> str:
        return f"{self.role}:{self.kind}"


# ---- the valid event of each topic -----------------------------------------------------------


def _task(task_id: str) -> TaskSubmitted:
    return TaskSubmitted(
        task_id=task_id, task_type="tumor_screening", features=FEATURES, context={"at": "north"}
    )


def _score() -> Score:
    return Score(
        model=ModelRef(name="tumor_screening", version="1"),
        prediction="benign",
        probabilities={"benign": 0.6, "malignant": 0.4},
        confidence=0.6,
    )


def valid(role: Role, task_id: str) -> EventData:
    """A valid event of the topic, about ``task_id``, that changes nothing else in the run."""
    policy = PolicyRef(name="hostile", version=1)
    model = ModelRef(name="tumor_screening", version="1")
    if role == "submitted":
        return _task(task_id)
    if role == "scored":
        return TaskScored(task=_task(task_id), score=_score(), submitted_at=AT, scored_at=AT)
    if role == "routed":
        return TaskRouted(
            task=_task(task_id),
            score=_score(),
            route="review",
            reasons=["low_confidence"],
            policy=policy,
            outcomes=["benign", "malignant"],
            review_priority=50,
            due_at=AT + timedelta(days=3650),
            submitted_at=AT,
            routed_at=AT,
        )
    if role == "decisions":
        return DecisionMade(
            task_id=task_id,
            task_type="tumor_screening",
            outcome="benign",
            decided_by="model",
            confidence=0.99,
            model=model,
            policy=policy,
            submitted_at=AT,
            decided_at=AT,
        )
    if role == "control":  # a drift alarm, cleared, for a model nobody serves
        return ControlChanged(
            kind="drift",
            name="hostile_model",
            value={"feature": "mean_radius", "version": "0", "drifting": False},
            changed_by="hostile",
            changed_at=AT,
        )
    if role == "feedback":
        return FeedbackRecorded(
            task_id=task_id,
            task_type="tumor_screening",
            features=FEATURES,
            model=model,
            prediction="benign",
            probabilities={"benign": 0.6, "malignant": 0.4},
            confidence=0.6,
            label="benign",
            reviewer="hostile",
            qa_sample=False,
            agreed=True,
            policy=policy,
            labelled_at=AT,
        )
    return DeadLetter(
        origin_topic="elsewhere",
        origin_partition=0,
        origin_offset=0,
        origin_key=task_id,
        service="hostile",
        error="made up",
        error_type="Rejected",
        payload="{}",
        headers={},
        failed_at=AT,
    )


# A valid event that its consumers do not accept on this topic.
WRONG_TOPIC: dict[Role, Role] = {
    "submitted": "decisions",
    "scored": "submitted",
    "routed": "scored",
    "decisions": "scored",
    "control": "submitted",
    "feedback": "decisions",
    "deadletter": "submitted",
}


@dataclass
class Base:
    """A valid record of the topic, in parts a kind changes: the key, the body, the headers."""

    role: Role
    subject: str
    body: dict[str, Any]
    headers: Headers
    valid_subject: str  # the task id of the corpus's unchanged record of this topic

    @property
    def key(self) -> bytes:
        return self.subject.encode()

    @property
    def value(self) -> bytes:
        return json.dumps(self.body).encode()

    def set(self, name: str, value: bytes | None) -> Headers:
        """The headers with ``name`` replaced, at the end."""
        return [*self.without(name), (name, value)]

    def without(self, name: str) -> Headers:
        return [(k, v) for k, v in self.headers if k != name]

    def extra(self, raw_json: str) -> bytes:
        """The body with one more field (events keep unknown fields) holding raw JSON."""
        return self.value[:-1] + b', "hostile": ' + raw_json.encode() + b"}"

    def changed(self, path: str, value: Any) -> bytes:
        """The body with the field at ``path`` (dotted) set to ``value``; JSON as Python
        writes it, NaN and Infinity included."""
        body = copy.deepcopy(self.body)
        *parents, last = path.split(".")
        inner = body
        for part in parents:
            inner = inner[part]
        inner[last] = value
        return json.dumps(body).encode()


def base(role: Role, subject: str, valid_subject: str) -> Base:
    event = Event(f"hostile-{subject}", "tests/hostile", subject, valid(role, subject), AT)
    return Base(role, subject, json.loads(event.value()), list(event.headers()), valid_subject)


Made = tuple[bytes | None, Headers, Expect]
Kind = Callable[[Base], Made]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---- kinds that mean the same on every topic -------------------------------------------------

ENVELOPE: dict[str, Kind] = {
    "valid": lambda b: (b.value, b.headers, "processed"),  # first: the others' valid_subject
    "no_headers": lambda b: (b.value, [], "dead"),
    "no_ce_specversion": lambda b: (b.value, b.without("ce_specversion"), "dead"),
    "no_ce_id": lambda b: (b.value, b.without("ce_id"), "dead"),
    "no_ce_source": lambda b: (b.value, b.without("ce_source"), "dead"),
    "no_ce_type": lambda b: (b.value, b.without("ce_type"), "dead"),
    "empty_ce_type": lambda b: (b.value, b.set("ce_type", b""), "dead"),
    "null_ce_type": lambda b: (b.value, b.set("ce_type", None), "dead"),
    "specversion_0_3": lambda b: (b.value, b.set("ce_specversion", b"0.3"), "dead"),
    "specversion_padded": lambda b: (b.value, b.set("ce_specversion", b" 1.0"), "dead"),
    "unknown_ce_type": lambda b: (b.value, b.set("ce_type", b"tandem.nope.v9"), "dead"),
    "ce_type_invalid_utf8": lambda b: (b.value, b.set("ce_type", b"\xff\xfe"), "dead"),
    "ce_type_unknown_then_valid": lambda b: (
        b.value,
        [("ce_type", b"tandem.nope.v9"), *b.headers],
        "dead",
    ),
    "ce_type_valid_then_unknown": lambda b: (
        b.value,
        [*b.headers, ("ce_type", b"tandem.nope.v9")],
        "processed",
    ),
    "ce_id_repeated_differently": lambda b: (
        b.value,
        [*b.headers, ("ce_id", b"another-id")],
        "processed",
    ),
    "ce_id_invalid_utf8": lambda b: (b.value, b.set("ce_id", b"id-\xff"), "processed"),
    "ce_id_64k": lambda b: (b.value, b.set("ce_id", b"i" * 65_536), "processed"),
    "ce_subject_null": lambda b: (b.value, b.set("ce_subject", None), "processed"),
    "ce_time_not_a_time": lambda b: (b.value, b.set("ce_time", b"yesterday"), "dead"),
    "ce_time_naive": lambda b: (b.value, b.set("ce_time", b"2026-11-25T10:00:00"), "processed"),
    "ce_time_year_9999": lambda b: (
        b.value,
        b.set("ce_time", b"9999-12-31T23:59:59+00:00"),
        "processed",
    ),
    "traceparent_garbage": lambda b: (b.value, b.set("traceparent", b"00-zz-\xff-01"), "processed"),
    "traceparent_null": lambda b: (b.value, b.set("traceparent", None), "processed"),
    "traceparent_repeated_1000": lambda b: (
        b.value,
        [*b.headers, *(("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),) * 1_000],
        "processed",
    ),
    # Outputs carry the trace headers on, here over the broker's limit: a consumer with
    # outputs refuses the record; one without (the review API, control followers) takes it.
    # Longer than a valid tracestate: not passed on to the outputs, so they stay small.
    "tracestate_near_limit": lambda b: (
        b.value,
        [*b.headers, ("tracestate", b"k=" + b"v" * (NEAR_LIMIT - len(b.value) - 1_000))],
        "processed",
    ),
    # A dead letter escapes each control byte of the payload it keeps as six characters, and
    # carries the trace headers on: together over the broker's limit.
    "trace_header_inflating_the_dead_letter": lambda b: (
        b"\x01" * 20_000,
        [*b.headers, ("traceparent", b"0" * (NEAR_LIMIT - 21_000 - len(str(b.headers))))],
        "dead",
    ),
    "traceparent_near_limit_not_json": lambda b: (
        b"{not json",
        [*b.headers, ("traceparent", b"0" * (NEAR_LIMIT - 1_000))],
        "dead",
    ),
    "ten_thousand_headers": lambda b: (
        b.value,
        [*b.headers, *((f"x-{n}", b"v") for n in range(10_000))],
        "processed",
    ),
    "header_name_64k": lambda b: (b.value, [*b.headers, ("n" * 65_536, b"v")], "processed"),
    # No header of it can be read, the CloudEvents ones neither: the services dead-letter it,
    # the audit sink keeps it as it came.
    "header_name_invalid_utf8": lambda b: (
        b.value,
        [*b.headers, (RawName(b"x-\xff\xfe"), b"v")],
        "processed" if b.role in ("feedback", "deadletter") else "dead",
    ),
    "oversized_header_valid_event": lambda b: (
        b.value,
        [*b.headers, ("x-junk", b"\x01" * (NEAR_LIMIT - len(b.value) - 1_000))],
        "processed",
    ),
    "oversized_header_no_envelope": lambda b: (b"{}", [("x-junk", b"h" * NEAR_LIMIT)], "dead"),
}

VALUES: dict[str, Kind] = {
    "tombstone_with_headers": lambda b: (None, b.headers, "dead"),
    "tombstone_no_headers": lambda b: (None, [], "dead"),
    "empty_value": lambda b: (b"", b.headers, "dead"),
    "oversized_0x01_no_headers": lambda b: (b"\x01" * NEAR_LIMIT, [], "dead"),
    "oversized_0x01_with_headers": lambda b: (b"\x01" * (NEAR_LIMIT - 400), b.headers, "dead"),
    "oversized_json_string": lambda b: (
        json.dumps("s" * (NEAR_LIMIT - 400)).encode(),
        b.headers,
        "dead",
    ),
    "oversized_extra_field_leaving_room": lambda b: (
        b.extra(json.dumps("z" * 600_000)),
        b.headers,
        "processed",
    ),
    "invalid_utf8_in_string": lambda b: (
        b.value[:-1] + b', "hostile": "\xff\xfe"}',
        b.headers,
        "dead",
    ),
    "utf8_bom": lambda b: (b"\xef\xbb\xbf" + b.value, b.headers, "dead"),
    "utf16_json": lambda b: (b.value.decode().encode("utf-16"), b.headers, "dead"),
    "not_json": lambda b: (b"{this is not json", b.headers, "dead"),
    "trailing_garbage": lambda b: (b.value + b" garbage", b.headers, "dead"),
    "json_comment": lambda b: (b"/* hi */" + b.value, b.headers, "dead"),
    "single_quotes": lambda b: (b.value.replace(b'"', b"'"), b.headers, "dead"),
    "json_null": lambda b: (b"null", b.headers, "dead"),
    "json_array_of_the_event": lambda b: (b"[" + b.value + b"]", b.headers, "dead"),
    "json_number_1e999": lambda b: (b"1e999", b.headers, "dead"),
    "empty_object": lambda b: (b"{}", b.headers, "dead"),
    "nested_100k_arrays": lambda b: (_nested(100_000).encode(), b.headers, "dead"),
    "nested_100k_in_field": lambda b: (b.extra(_nested(100_000)), b.headers, "dead"),
    "nested_5k_objects_in_field": lambda b: (
        b.extra('{"a":' * 5_000 + "1" + "}" * 5_000),
        b.headers,
        "dead",
    ),
    "nested_100_in_field": lambda b: (b.extra(_nested(100)), b.headers, "processed"),
    "nan_in_field": lambda b: (b.extra("NaN"), b.headers, "processed"),
    "infinity_in_field": lambda b: (b.extra("-Infinity"), b.headers, "processed"),
    "int_400_digits_in_field": lambda b: (b.extra("9" * 400), b.headers, "processed"),
    "int_5000_digits_in_field": lambda b: (b.extra("9" * 5_000), b.headers, "dead"),
    "float_1e400_in_field": lambda b: (b.extra("1e400"), b.headers, "processed"),
    "lone_surrogate_in_field": lambda b: (b.extra('"\\ud800"'), b.headers, "dead"),
    "nul_in_field": lambda b: (b.extra('"a\\u0000b"'), b.headers, "processed"),
    "duplicate_keys": lambda b: (b.value[:-1] + b', "x": 1, "x": 2}', b.headers, "processed"),
    "unknown_fields": lambda b: (b.extra('{"future": [1, 2, 3]}'), b.headers, "processed"),
}

# The key is the task id by convention, never trusted: a kind here changes only the key.
KEYS: dict[str, Callable[[Base], bytes | None]] = {
    "null_key": lambda b: None,
    "empty_key": lambda b: b"",
    "key_invalid_utf8": lambda b: b"\xff\xfe" + b.key,
    "key_256k": lambda b: b"k" * 262_144,
    "key_not_the_task": lambda b: b"someone-else",
}


def _wrong_topic(b: Base) -> Made:
    other = WRONG_TOPIC[b.role]
    event = Event(f"hostile-{b.subject}", "tests/hostile", b.subject, valid(other, b.subject), AT)
    return event.value(), list(event.headers()), "dead"


# ---- kinds of one topic's event --------------------------------------------------------------


def _task_kinds(at: str) -> dict[str, Kind]:
    """A submitted task's fields, where the task is at ``at`` ("" or "task.") in the body."""

    def field(name: str, value: Any, expect: Expect) -> Kind:
        return lambda b: (b.changed(at + name, value), b.headers, expect)

    features = at + "features"
    return {
        "task_id_int": field("task_id", 42, "dead"),
        "task_id_empty": field("task_id", "", "dead"),
        "task_id_129_chars": field("task_id", "t" * 129, "dead"),
        "task_id_unicode": field("task_id", "ü-😀-\u202e-\u0301", "processed"),
        "task_id_nul": field("task_id", "a\u0000b", "dead"),  # no control characters in ids
        "task_id_lone_surrogate": field("task_id", "a\ud800b", "dead"),
        "task_type_65_chars": field("task_type", "t" * 65, "dead"),
        "features_list": field("features", [1, 2], "dead"),
        "features_string": field("features", "radius=3", "dead"),
        "features_null": field("features", None, "dead"),
        "features_empty": field("features", {}, "processed"),
        "feature_object": field("features.mean_radius", {"a": 1}, "dead"),
        "feature_nan": field("features.mean_radius", float("nan"), "processed"),
        "feature_infinity": field("features.mean_radius", float("inf"), "processed"),
        "feature_int_400_digits": field("features.mean_radius", 10**399, "processed"),
        "feature_text": field("features.mean_radius", "fourteen", "processed"),
        "feature_bool": field("features.mean_radius", True, "processed"),
        "feature_name_100k": lambda b: (
            b.changed(features, {**FEATURES, "f" * 100_000: 1.0}),
            b.headers,
            "processed",
        ),
        "ten_thousand_features": lambda b: (
            b.changed(features, {**FEATURES, **{f"f{n}": n for n in range(10_000)}}),
            b.headers,
            "processed",
        ),
        "priority_101": field("priority", 101, "dead"),
        "priority_fraction": field("priority", 50.5, "dead"),
        "priority_nan": field("priority", float("nan"), "dead"),
        "priority_int_400_digits": field("priority", 10**399, "dead"),
        "priority_as_text": field("priority", "50", "processed"),
        "critical_as_text": field("critical", "no", "processed"),
        "context_list": field("context", [1], "dead"),
        "context_int_400_digits": field("context", {"n": 10**399}, "processed"),
    }


def _submitted_kinds() -> dict[str, Kind]:
    return {
        **_task_kinds(""),
        # No model serves it: scoring can never score it.
        "task_type_unknown": lambda b: (b.changed("task_type", "no_such_type"), b.headers, "dead"),
    }


def _scored_kinds() -> dict[str, Kind]:
    def field(path: str, value: Any, expect: Expect) -> Kind:
        return lambda b: (b.changed(path, value), b.headers, expect)

    return {
        **_task_kinds("task."),
        "confidence_above_1": field("score.confidence", 1.5, "dead"),
        "confidence_nan": field("score.confidence", float("nan"), "dead"),
        "probabilities_nan": field("score.probabilities.benign", float("nan"), "processed"),
        "prediction_no_outcome": field("score.prediction", "alien", "processed"),
        "quality_flag_unknown": field(
            "score.quality_flags", [{"code": "odd", "feature": "x", "detail": "?"}], "dead"
        ),
        "model_missing": lambda b: (
            json.dumps({**b.body, "score": {**b.body["score"], "model": None}}).encode(),
            b.headers,
            "dead",
        ),
        "task_type_unknown_to_policy": field("task.task_type", "no_such_type", "processed"),
        "scored_at_naive": field("scored_at", "2026-11-25T10:00:00", "dead"),
        "scored_at_year_1": field("scored_at", "0001-01-01T00:00:00+00:00", "processed"),
        "scored_at_year_9999": field("scored_at", "9999-12-31T23:59:59+00:00", "dead"),
    }


def _routed_kinds() -> dict[str, Kind]:
    def field(path: str, value: Any, expect: Expect) -> Kind:
        return lambda b: (b.changed(path, value), b.headers, expect)

    return {
        **_task_kinds("task."),
        "route_auto": field("route", "auto", "dead"),
        "required_approvals_0": field("required_approvals", 0, "dead"),
        "review_priority_101": field("review_priority", 101, "dead"),
        "on_overdue_unknown": field("on_overdue", "explode", "dead"),
        "outcomes_empty": field("outcomes", [], "processed"),
        "due_at_naive": field("due_at", "2036-11-25T10:00:00", "dead"),
        "due_at_year_1": field("due_at", "0001-01-01T00:00:00+00:00", "processed"),
        "due_at_year_9999": field("due_at", "9999-12-31T23:59:59+00:00", "processed"),
        "reasons_ten_thousand": field("reasons", [f"r{n}" for n in range(10_000)], "processed"),
    }


def _decision_kinds() -> dict[str, Kind]:
    def field(path: str, value: Any, expect: Expect) -> Kind:
        return lambda b: (b.changed(path, value), b.headers, expect)

    return {
        "decided_by_alien": field("decided_by", "alien", "dead"),
        "task_id_empty": field("task_id", "", "dead"),
        "task_id_lone_surrogate": field("task_id", "a\ud800b", "dead"),
        "confidence_text": field("confidence", "high", "dead"),
        "confidence_nan": field("confidence", float("nan"), "processed"),
        "decided_at_naive": field("decided_at", "2026-11-25T10:00:00", "dead"),
        "decided_at_year_1": field("decided_at", "0001-01-01T00:00:00+00:00", "processed"),
        "reviewers_ten_thousand": field("reviewers", [f"p{n}" for n in range(10_000)], "processed"),
        "policy_version_text": field("policy.version", "three", "dead"),
    }


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, "
    f"*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}]\n"
    for n in range(9)
)


def _control_kinds() -> dict[str, Kind]:
    def change(kind: str, name: str, value: Any, expect: Expect = "processed") -> Kind:
        def make(b: Base) -> Made:
            body = {**b.body, "kind": kind, "name": name, "value": value}
            return json.dumps(body).encode(), b.headers, expect

        return make

    def policy(document: str) -> dict[str, Any]:
        return {"active": {"name": "hostile", "version": 99, "document": document}}

    def field(path: str, value: Any, expect: Expect) -> Kind:
        return lambda b: (b.changed(path, value), b.headers, expect)

    return {
        "kind_unknown": change("reboot", "x", {}, "dead"),
        "value_not_an_object": change("policy", "x", [1, 2], "dead"),
        "policy_state_empty": change("policy", "hostile", {}),
        "policy_not_yaml": change("policy", "hostile", policy("{[: not yaml")),
        "policy_yaml_alias_bomb": change("policy", "hostile", policy(BOMB)),
        "policy_yaml_python_tag": change(
            "policy", "hostile", policy("!!python/object/apply:os.system ['true']")
        ),
        "policy_800k_document": change("policy", "hostile", policy("# " + "p" * 800_000)),
        "kill_switch_garbage": change("kill_switch", "all", {"all": [1], "task_types": 3}),
        "model_empty_live": change("model", "tumor_screening", {"live": ""}),
        "model_unknown_version": change("model", "tumor_screening", {"live": "999"}),
        "model_path_traversal": change("model", "../../../etc", {"live": "../passwd"}),
        "model_registry_garbage": change("model_registry", "tumor_screening", {"x": [1]}),
        "drift_without_feature": change("drift", "hostile_model", {"drifting": True}),
        # A later change of the key of the valid record, its time without a zone.
        "changed_at_naive_same_key": lambda b: (
            b.changed("changed_at", "2026-11-25T11:00:00"),
            b.set("ce_subject", b.valid_subject.encode()),
            "dead",
        ),
        "changed_at_year_1": field("changed_at", "0001-01-01T00:00:00+00:00", "processed"),
        "changed_by_missing": lambda b: (
            json.dumps({k: v for k, v in b.body.items() if k != "changed_by"}).encode(),
            b.headers,
            "dead",
        ),
    }


TYPED: dict[Role, Callable[[], dict[str, Kind]]] = {
    "submitted": _submitted_kinds,
    "scored": _scored_kinds,
    "routed": _routed_kinds,
    "decisions": _decision_kinds,
    "control": _control_kinds,
    "feedback": dict,
    "deadletter": dict,
}


def corpus(role: Role, run: str = "h") -> list[Hostile]:
    """Every kind for the topic of ``role``, each about a task id of its own (prefixed with
    ``run``, so a corpus can be written twice without the copies deduplicating)."""
    records: list[Hostile] = []
    kinds = {**ENVELOPE, **VALUES, "wrong_topic": _wrong_topic, **TYPED[role]()}
    first = f"{run}-{role}-0"
    for n, (kind, make) in enumerate(kinds.items()):
        b = base(role, f"{run}-{role}-{n}", first)
        value, headers, expect = make(b)
        records.append(Hostile(role, kind, b.key, value, headers, expect))
    for n, (kind, key) in enumerate(KEYS.items(), start=len(kinds)):
        if role == "control" and kind == "null_key":
            continue  # a compacted topic's broker refuses a record without a key
        b = base(role, f"{run}-{role}-{n}", first)
        records.append(Hostile(role, kind, key(b), b.value, b.headers, "processed"))
    return records
