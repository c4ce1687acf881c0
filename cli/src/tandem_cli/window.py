"""Window bounds as the commands take them: ``24h`` ago, ``now``, or an ISO time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import typer

_AGO = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def when(text: str, now: datetime | None = None) -> datetime:
    """``24h``, ``90m``, ``7d`` ago, ``now``, or an ISO 8601 time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    if text == "now":
        return now
    if match := _AGO.match(text):
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: use 24h, 90m, 7d, now or an ISO time") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)
