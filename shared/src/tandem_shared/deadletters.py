"""Dead letters that the broker always accepts: whatever the poison record held, its letter is
cut to a bounded size, with the whole original's size and SHA-256 kept to identify it.

A letter that is too large to publish would stall its consumer for good (the loop retries the
batch forever), so every part a record controls is bounded here: the payload, each header, the
number of headers, the key and the error text. JSON escapes a control byte as six characters,
so the bounds are on characters with that worst case in mind: a letter stays under 300 KB,
well below the broker's default limit of 1 MB.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from tandem_shared.envelope import Headers
from tandem_shared.events import DeadLetter

PAYLOAD_CHARS = 16_384
HEADER_CHARS = 512
HEADER_NAME_CHARS = 128
HEADERS_KEPT = 32
KEY_CHARS = 1_024
ERROR_CHARS = 4_096
_CUT = "…[cut]"


def cut(text: str, limit: int) -> str:
    """``text`` itself, or its first characters and a mark, ``limit`` characters at most."""
    return text if len(text) <= limit else text[: limit - len(_CUT)] + _CUT


def bounded_headers(headers: Headers) -> dict[str, str]:
    """The record's headers as text, each cut, the first of a repeated name kept, at most
    HEADERS_KEPT of them."""
    out: dict[str, str] = {}
    for name, raw in headers:
        key = cut(name, HEADER_NAME_CHARS)
        if key in out:
            continue
        if len(out) == HEADERS_KEPT:
            out["…"] = f"{len(headers) - HEADERS_KEPT} more headers cut"
            break
        text = raw.decode("utf-8", errors="replace") if raw is not None else ""
        out[key] = cut(text, HEADER_CHARS)
    return out


def letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: str | None,
    value: bytes | None,
    headers: Headers,
    service: str,
    error: str,
    error_type: str,
    failed_at: datetime,
) -> DeadLetter:
    """The dead letter of one record, publishable whatever the record held."""
    raw = value or b""
    text = raw.decode("utf-8", errors="replace")
    return DeadLetter(
        origin_topic=topic,
        origin_partition=partition,
        origin_offset=offset,
        origin_key=None if key is None else cut(key, KEY_CHARS),
        service=service,
        error=cut(error, ERROR_CHARS),
        error_type=cut(error_type, HEADER_NAME_CHARS),
        payload=cut(text, PAYLOAD_CHARS),
        headers=bounded_headers(headers),
        failed_at=failed_at,
        payload_size=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        payload_truncated=len(text) > PAYLOAD_CHARS,
    )
