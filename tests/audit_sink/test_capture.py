"""The sink's decoder keeps every record: valid CloudEvents as they are, anything else raw."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord
from tandem_audit_sink.consumer import MAX_ATTRIBUTE, capture
from tandem_audit_sink.ledger import UNPARSED_TYPE, canonical_json
from tandem_audit_sink.privacy import Redactor
from tandem_shared.envelope import event_id

from tests.kafka_utils import ce_headers

TASK = {"task_id": "t-1", "task_type": "loan", "features": {"amount": 5.0}}


def consumer_record(
    value: bytes | None, headers: list[tuple[str, bytes]], key: bytes | None = b"t-1"
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        "tandem.tasks.submitted", 2, 41, 1_767_225_600_000, 0, key, value, None, 0, 0, headers
    )


def test_a_valid_event_keeps_its_attributes_and_the_data_as_sent() -> None:
    body = {**TASK, "unknown_extra": [1, 2]}
    headers = [*ce_headers("tandem.task.submitted.v1", "t-1", "id-1"), ("traceparent", b"00-x")]
    captured = capture(consumer_record(json.dumps(body).encode(), headers))
    assert captured.event_id == "id-1"
    assert captured.event_type == "tandem.task.submitted.v1"
    assert captured.source == "tests/producer"
    assert captured.subject == "t-1"
    assert captured.event_time == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert (captured.topic, captured.partition, captured.offset) == (
        "tandem.tasks.submitted",
        2,
        41,
    )
    assert captured.data == body  # not re-serialised: no defaults filled in
    assert captured.headers["traceparent"] == "00-x"
    assert captured.headers["ce_id"] == "id-1"


def test_non_json_is_kept_raw_with_an_id_from_its_position() -> None:
    headers = ce_headers("tandem.task.submitted.v1", "t-1")
    captured = capture(consumer_record(b"{not json", headers))
    assert captured.event_type == UNPARSED_TYPE
    assert captured.event_id == event_id("tandem.tasks.submitted/2/41", "unparsed")
    assert captured.subject == "t-1"
    assert captured.source == "tests/producer"
    assert captured.data["value"] == "{not json"
    assert captured.data["encoding"] == "utf-8"
    assert "not JSON" in captured.data["reason"]
    assert captured.event_time == datetime(2026, 1, 1, tzinfo=UTC)  # the record's timestamp


def test_records_that_are_not_tandem_events_are_kept_too() -> None:
    no_headers = capture(consumer_record(json.dumps(TASK).encode(), [], key=None))
    assert no_headers.event_type == UNPARSED_TYPE
    assert "ce_specversion" in no_headers.data["reason"]
    assert no_headers.subject == ""
    assert no_headers.source == "unknown"

    unknown = capture(consumer_record(b"{}", ce_headers("com.example.other", "t-1")))
    assert unknown.event_type == UNPARSED_TYPE
    assert "unknown" in unknown.data["reason"]

    invalid = capture(
        consumer_record(b'{"task_id": "t-1"}', ce_headers("tandem.task.submitted.v1", "t-1"))
    )
    assert invalid.event_type == UNPARSED_TYPE
    assert "schema" in invalid.data["reason"]

    tombstone = capture(consumer_record(None, []))
    assert tombstone.data["value"] is None


def test_hostile_records_are_kept_and_can_always_be_hashed() -> None:
    binary = capture(consumer_record(b"\xff\xfe\x00raw", []))
    assert binary.data["encoding"] == "base64"
    assert base64.b64decode(binary.data["value"]) == b"\xff\xfe\x00raw"

    deep = capture(consumer_record(b"[" * 100_000, ce_headers("tandem.task.submitted.v1", "t")))
    assert deep.event_type == UNPARSED_TYPE

    long_id = ce_headers("tandem.task.submitted.v1", "t-1", "x" * (MAX_ATTRIBUTE + 1))
    assert capture(consumer_record(json.dumps(TASK).encode(), long_id)).event_type == (
        UNPARSED_TYPE
    )

    nul_subject = ce_headers("tandem.task.submitted.v1", "t\x00-1")
    nul = capture(consumer_record(json.dumps(TASK).encode(), nul_subject, key=b"k\x00"))
    assert nul.event_type == UNPARSED_TYPE
    assert "\x00" not in nul.subject

    not_finite = capture(
        consumer_record(
            b'{"task_id": "t-1", "task_type": "loan", "features": {"amount": NaN}}',
            ce_headers("tandem.task.submitted.v1", "t-1"),
        )
    )
    assert not_finite.event_type == UNPARSED_TYPE

    for captured in (binary, deep, nul, not_finite):
        canonical_json({"data": captured.data, "headers": dict(captured.headers)})


def test_private_fields_are_stored_as_keyed_hashes_only() -> None:
    redact = Redactor(["email", "ssn"], b"privacy-key")
    body = {
        "task_id": "t-1",
        "task_type": "loan",
        "features": {"amount": 5.0, "ssn": "123-45-6789"},
        "context": {"applicants": [{"email": "ann@example.org"}, {"email": None}]},
    }
    headers = ce_headers("tandem.task.submitted.v1", "t-1", "id-1")
    captured = capture(consumer_record(json.dumps(body).encode(), headers), redact)
    stored = canonical_json(captured.data)
    assert "123-45-6789" not in stored and "ann@example.org" not in stored
    assert captured.data["features"] == {"amount": 5.0, "ssn": redact.hashed("123-45-6789")}
    applicants = captured.data["context"]["applicants"]
    assert applicants[0]["email"] == redact.hashed("ann@example.org")
    assert applicants[1]["email"] == redact.hashed(None)
    # keyed: without the key, the same value hashes otherwise
    assert Redactor(["ssn"], b"another key").hashed("123-45-6789") != redact.hashed("123-45-6789")
    # raw JSON that is not a valid event is searched too
    raw = json.dumps({"ssn": "123-45-6789", "oops": True}).encode()
    unparsed = capture(consumer_record(raw, []), redact)
    assert "123-45-6789" not in canonical_json(unparsed.data)


def test_private_fields_need_a_key() -> None:
    with pytest.raises(ValueError, match="no privacy key"):
        Redactor(["ssn"], b"")
