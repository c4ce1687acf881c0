"""Figures as the command line's reports print them: shares and their intervals."""

from __future__ import annotations

from collections.abc import Sequence


def share(value: float | None, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:.1%}"


def interval(value: Sequence[float] | None) -> str:
    """A 95% interval of a share, or nothing when there is none."""
    return "" if not value else f"{value[0]:.1%} to {value[1]:.1%}"
