"""The pure ledger: canonical form, RFC 6962 hashing, the chain and its verification."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from tandem_audit_sink.ledger import (
    GENESIS_HEAD,
    AuditRecord,
    Head,
    StoredEntry,
    Verifier,
    canonical_json,
    chain_hash,
    leaf_hash,
    seal,
    verify,
)

from tests.audit_sink.conftest import T0, record

RECORDED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Written out by hand: sorted keys, no spaces, times in UTC with microseconds and Z.
HAND_CANONICAL = (
    '{"data":{"task_id":"t-1"},"headers":{},"id":"e-1","key":"t-1","offset":7,"partition":0,'
    '"recorded_at":"2026-01-02T03:04:05.000000Z","seq":1,"source":"tests","subject":"t-1",'
    '"time":"2026-01-01T00:00:00.500000Z","topic":"tandem.tasks.submitted",'
    '"type":"tandem.task.submitted.v1"}'
)
# SHA-256(0x00 || canonical) and SHA-256(0x01 || 32 zero bytes || leaf).
HAND_LEAF = "3174bd70e0aec544b83a9935c63608e56917e9b0e8e339216f8eabcfde2d9ff5"
HAND_CHAIN = "70eeb6af7dae5a95e4aa75088633912b7259609fe52fd98c90941199d6d61300"


def chain(count: int) -> list[StoredEntry]:
    head, rows = GENESIS_HEAD, []
    for n in range(1, count + 1):
        entry = seal(record(n), n, RECORDED, head)
        rows.append(entry)
        head = Head(entry.seq, entry.chain_hash)
    return rows


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
    entry = seal(one, 1, RECORDED, GENESIS_HEAD)
    assert entry.canonical == HAND_CANONICAL
    assert entry.leaf_hash == HAND_LEAF
    assert entry.chain_hash == HAND_CHAIN
    assert entry.event_time == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert verify([entry], Head(1, HAND_CHAIN)).ok


def test_hash_prefixes_follow_rfc_6962() -> None:
    assert leaf_hash("x") == hashlib.sha256(b"\x00x").digest()
    previous, leaf = bytes(range(32)), bytes(range(32, 64))
    assert chain_hash(previous, leaf) == hashlib.sha256(b"\x01" + previous + leaf).digest()
    # a leaf can never be passed off as an interior hash
    assert leaf_hash("x") != hashlib.sha256(b"x").digest()


def test_canonical_json_is_one_spelling() -> None:
    assert canonical_json({"b": [1, {"d": 2, "c": None}], "a": "ü"}) == (
        '{"a":"ü","b":[1,{"c":null,"d":2}]}'
    )
    assert canonical_json({"t": datetime(2026, 5, 1, tzinfo=UTC)}) == (
        '{"t":"2026-05-01T00:00:00.000000Z"}'
    )
    assert canonical_json({"nul": "a\x00b"}) == '{"nul":"a\\u0000b"}'
    with pytest.raises(ValueError, match="Out of range"):
        canonical_json({"x": float("nan")})
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"x": "\ud800"})


def test_an_untouched_chain_verifies() -> None:
    rows = chain(5)
    result = verify(rows, Head(5, rows[-1].chain_hash))
    assert result.ok
    assert result.entries == 5
    assert result.head == Head(5, rows[-1].chain_hash)
    assert verify([]).ok


def test_a_changed_entry_is_a_leaf_mismatch_at_its_row() -> None:
    rows = chain(5)
    doc = json.loads(rows[2].canonical)
    doc["data"]["features"]["amount"] = 1_000_000
    rows[2] = dataclasses.replace(rows[2], canonical=canonical_json(doc))
    result = verify(rows)
    assert not result.ok
    assert result.failure is not None
    assert result.failure.seq == 3
    assert result.failure.reason.startswith("leaf mismatch")
    assert result.entries == 2


def test_a_changed_column_is_an_entry_mismatch() -> None:
    rows = chain(4)
    rows[1] = dataclasses.replace(rows[1], subject="someone-else", event_time=T0)
    result = verify(rows)
    assert result.failure is not None
    assert result.failure.seq == 2
    assert "entry mismatch" in result.failure.reason
    assert "subject" in result.failure.reason and "event_time" in result.failure.reason


def test_a_rehashed_row_breaks_the_chain_at_the_next_row() -> None:
    rows = chain(4)
    forged = seal(record(99), 2, RECORDED, Head(1, rows[0].chain_hash))
    rows[1] = forged  # consistent in itself, but row 3 was chained to the original
    result = verify(rows)
    assert result.failure is not None
    assert result.failure.seq == 3
    assert result.failure.reason.startswith("chain mismatch")


def test_a_removed_row_is_a_gap() -> None:
    rows = chain(5)
    del rows[3]
    result = verify(rows)
    assert result.failure is not None
    assert result.failure.seq == 4
    assert result.failure.reason == "gap in seq: expected 4, found 5"


def test_a_cut_tail_or_moved_head_is_caught_by_the_head() -> None:
    rows = chain(5)
    truncated = verify(rows[:3], Head(5, rows[-1].chain_hash))
    assert truncated.failure is not None
    assert truncated.failure.seq == 4
    assert truncated.failure.reason.startswith("ledger truncated")
    wrong = verify(rows, Head(5, "ab" * 32))
    assert wrong.failure is not None
    assert wrong.failure.seq == 5
    assert wrong.failure.reason.startswith("head mismatch")


def test_a_non_canonical_entry_is_refused() -> None:
    rows = chain(2)
    spaced = json.dumps(json.loads(rows[0].canonical), sort_keys=True)
    rows[0] = dataclasses.replace(rows[0], canonical=spaced, leaf_hash=leaf_hash(spaced).hex())
    result = verify(rows)
    assert result.failure is not None
    assert result.failure.seq == 1
    assert "not in canonical form" in result.failure.reason


def test_the_verifier_streams_in_chunks_and_stops_at_the_first_failure() -> None:
    rows = chain(10)
    rows[6] = dataclasses.replace(rows[6], leaf_hash="00" * 32)
    verifier = Verifier()
    assert verifier.feed(rows[:4])
    assert not verifier.feed(rows[4:8])
    assert not verifier.feed(rows[8:])
    result = verifier.finish(Head(10, rows[-1].chain_hash))
    assert result.failure is not None
    assert result.failure.seq == 7
    assert result.entries == 6
