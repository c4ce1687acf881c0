"""Ledger entries: canonical form and RFC 6962 leaf hashing, checked against hand-made values."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from tandem_audit_sink.ledger import AuditRecord, canonical_json, entry_leaf, parse, seal
from tandem_audit_sink.merkle import node_hash

from tests.audit_sink.conftest import record

RECORDED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Written out by hand: sorted keys, no spaces, times in UTC with microseconds and Z.
HAND_CANONICAL = (
    '{"data":{"task_id":"t-1"},"headers":{},"id":"e-1","key":"t-1","offset":7,"partition":0,'
    '"recorded_at":"2026-01-02T03:04:05.000000Z","seq":1,"source":"tests","subject":"t-1",'
    '"time":"2026-01-01T00:00:00.500000Z","topic":"tandem.tasks.submitted",'
    '"type":"tandem.task.submitted.v1"}'
)
# SHA-256(0x00 || canonical), computed apart from the code.
HAND_LEAF = "3174bd70e0aec544b83a9935c63608e56917e9b0e8e339216f8eabcfde2d9ff5"


def test_a_hand_computed_entry() -> None:
    one = AuditRecord(
        event_id="e-1",
        event_type="tandem.task.submitted.v1",
        source="tests",
        subject="t-1",
        event_time=datetime(2026, 1, 1, 1, 0, 0, 500000, tzinfo=timezone(timedelta(hours=1))),
        topic="tandem.tasks.submitted",
        partition=0,
        offset=7,
        key="t-1",
        data={"task_id": "t-1"},
    )
    entry = seal(one, 1, RECORDED)
    assert entry.canonical == HAND_CANONICAL
    assert entry.leaf_hash == HAND_LEAF
    assert entry.event_time == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert entry.task_type is None


def test_hash_prefixes_follow_rfc_6962() -> None:
    assert entry_leaf("x") == hashlib.sha256(b"\x00x").digest()
    left, right = bytes(range(32)), bytes(range(32, 64))
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # a leaf can never be passed off as an interior node
    assert entry_leaf("x") != hashlib.sha256(b"x").digest()


def test_the_task_type_column_comes_from_the_data() -> None:
    direct = seal(record(1, data={"task_type": "loan"}), 1, RECORDED)
    nested = seal(record(2, data={"task": {"task_type": "fraud"}}), 2, RECORDED)
    assert (direct.task_type, nested.task_type) == ("loan", "fraud")


def test_canonical_json_is_one_spelling() -> None:
    assert canonical_json({"b": [1, {"d": 2, "c": None}], "a": "ü"}) == (
        '{"a":"ü","b":[1,{"c":null,"d":2}]}'
    )
    assert canonical_json({"t": datetime(2026, 5, 1, tzinfo=UTC)}) == (
        '{"t":"2026-05-01T00:00:00.000000Z"}'
    )
    assert canonical_json({"nul": "a\x00b"}) == '{"nul":"a\\u0000b"}'
    assert canonical_json({"x": 1e-05, "y": 2.50, "z": 10**18}) == (
        '{"x":0.00001,"y":2.5,"z":1000000000000000000}'
    )
    with pytest.raises(ValueError, match="str is not valid UTF-8"):
        canonical_json({"x": "\ud800"})
    with pytest.raises(ValueError, match="Integer exceeds 64-bit range"):
        canonical_json({"x": 2**64})
    # strict JSON, so no NaN or infinity ever reaches the canonical form
    for spelling in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match=r"unexpected character|no digit after sign"):
            parse(f'{{"x": {spelling}}}')
