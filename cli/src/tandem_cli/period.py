"""Reporting periods: a quarter (2026-Q4), a month (2026-11), or the one before now
(last-month, last-quarter), as a UTC window [since, until)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Period:
    label: str  # as the report names it: 2026-Q4, 2026-11
    since: datetime
    until: datetime


def parse_period(text: str, now: datetime | None = None) -> Period:
    """The period ``text`` names; ValueError with the forms it takes otherwise."""
    now = now or datetime.now(UTC)
    if text == "last-month":
        year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
        return month_period(year, month)
    if text == "last-quarter":
        quarter = (now.month - 1) // 3
        year, quarter = (now.year, quarter) if quarter else (now.year - 1, 4)
        return quarter_period(year, quarter)
    if found := _QUARTER.match(text):
        return quarter_period(int(found[1]), int(found[2]))
    if found := _MONTH.match(text):
        return month_period(int(found[1]), int(found[2]))
    raise ValueError(f"{text!r} is not a period: 2026-Q4, 2026-11, last-month or last-quarter")


def month_period(year: int, month: int) -> Period:
    return Period(f"{year}-{month:02d}", _start(year, month), _start(year, month + 1))


def quarter_period(year: int, quarter: int) -> Period:
    first = 3 * (quarter - 1) + 1
    return Period(f"{year}-Q{quarter}", _start(year, first), _start(year, first + 3))


def _start(year: int, month: int) -> datetime:
    """The first instant of a month; month 13 is January of the next year."""
    if month > 12:
        year, month = year + 1, month - 12
    return datetime(year, month, 1, tzinfo=UTC)
