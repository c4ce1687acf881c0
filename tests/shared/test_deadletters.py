"""Dead letters stay publishable whatever the record held."""

from __future__ import annotations

import hashlib

from tandem_shared.deadletters import (
    HEADER_CHARS,
    HEADERS_KEPT,
    KEY_CHARS,
    PAYLOAD_CHARS,
    cut,
    letter,
)
from tandem_shared.envelope import utcnow


def make(value: bytes | None, headers: list[tuple[str, bytes]], key: str | None = "k") -> bytes:
    data = letter(
        topic="t",
        partition=0,
        offset=7,
        key=key,
        value=value,
        headers=headers,
        service="s",
        error="x" * 100_000,
        error_type="E",
        failed_at=utcnow(),
    )
    return data.model_dump_json().encode()


def test_the_worst_record_still_makes_a_letter_under_300_kb() -> None:
    # Control bytes everywhere: JSON writes each as six characters.
    headers = [(f"h{i}" + "\x01" * 1_000, b"\x01" * 100_000) for i in range(1_000)]
    encoded = make(b"\x01" * 5_000_000, headers, key="\x01" * 100_000)
    assert len(encoded) < 300_000


def test_a_small_record_is_copied_whole() -> None:
    value = b'{"task_id": "a"}'
    data = letter(
        topic="t",
        partition=1,
        offset=2,
        key="a",
        value=value,
        headers=[("ce_id", b"1"), ("ce_id", b"2")],
        service="s",
        error="bad",
        error_type="EnvelopeError",
        failed_at=utcnow(),
    )
    assert data.payload == value.decode() and not data.payload_truncated
    assert data.headers == {"ce_id": "1"}  # the first of a repeated header, as decoding reads
    assert data.payload_size == len(value)
    assert data.payload_sha256 == hashlib.sha256(value).hexdigest()


def test_a_large_record_is_cut_and_identified() -> None:
    value = b"a" * (PAYLOAD_CHARS * 3)
    data = letter(
        topic="t",
        partition=0,
        offset=0,
        key="k" * (KEY_CHARS * 2),
        value=value,
        headers=[(f"h{i}", b"v" * (HEADER_CHARS * 2)) for i in range(HEADERS_KEPT + 5)],
        service="s",
        error="bad",
        error_type="E",
        failed_at=utcnow(),
    )
    assert data.payload_truncated and len(data.payload) == PAYLOAD_CHARS
    assert data.payload.endswith("[cut]")
    assert data.payload_size == len(value)
    assert data.payload_sha256 == hashlib.sha256(value).hexdigest()
    assert data.origin_key is not None and len(data.origin_key) == KEY_CHARS
    assert len(data.headers) == HEADERS_KEPT + 1
    assert data.headers["…"] == "5 more headers cut"
    assert all(len(v) <= HEADER_CHARS for v in data.headers.values())


def test_cut_keeps_what_fits() -> None:
    assert cut("abc", 3) == "abc"
    assert len(cut("abcdefghijkl", 10)) == 10


def test_an_empty_record_has_an_empty_payload() -> None:
    data = letter(
        topic="t",
        partition=0,
        offset=0,
        key=None,
        value=None,
        headers=[],
        service="s",
        error="empty",
        error_type="E",
        failed_at=utcnow(),
    )
    assert data.payload == "" and data.payload_size == 0 and data.origin_key is None
