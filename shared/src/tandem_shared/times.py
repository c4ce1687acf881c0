"""A time in a request, read as the OpenAPI document describes it: RFC 3339 with its offset.
Pydantic alone would also take a time without an offset (which one a client meant, nobody
knows), a number of seconds, or a date, and a year near 1 or 9999 that overflows once moved
to UTC: each of those is refused or clamped here, never a 500 further in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, TypeAdapter

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_AWARE: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
# Tandem holds nothing older than the epoch (nor do Kafka's timestamps); a time outside these
# is read as the nearer end, so that a window reaching past either still means what it says
# and arithmetic on it stays within what a datetime can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _rfc3339(value: object) -> object:
    # Parsed here, so that a body read in strict mode (where text is no datetime) takes it too.
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return _AWARE.validate_python(value)
    raise ValueError("not an RFC 3339 time with its offset, such as 2026-01-31T09:00:00Z")


def _in_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or year 9999, east or west of UTC
        return EARLIEST if value.year == 1 else LATEST
    return min(max(utc, EARLIEST), LATEST)


# A time in a query or a body: RFC 3339 with its offset, as UTC from 1970 on.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]
_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp)


def timestamp(text: str) -> datetime:
    """``text`` read as a Timestamp; ValueError when it is not one."""
    return _TIMESTAMP.validate_python(text)


# What a report reads when asked for no window.
DEFAULT_WINDOW = timedelta(days=7)


class WindowError(ValueError):
    """A window a report will not read; the message says why (an API answers it with 422)."""


def bounded_window(
    since: datetime | None, until: datetime | None, longest_days: int, now: datetime
) -> tuple[datetime, datetime]:
    """[since, until) with its defaults (until now, since a week before until), as long as it
    starts before it ends and spans at most ``longest_days``: each call reads all of it."""
    end = until or now
    start = since or end - DEFAULT_WINDOW
    if start >= end:
        raise WindowError("since must be before until")
    if end - start > timedelta(days=longest_days):
        raise WindowError(f"the window spans at most {longest_days} days; ask for less")
    return start, end
