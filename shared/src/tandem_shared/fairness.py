"""Comparing a segment with the whole: a share's confidence interval (an accuracy estimated from
QA samples), and how far a segment's rate departs from the whole's."""

from __future__ import annotations

import math

from pydantic import BaseModel

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95% interval


def wilson(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of successes / trials (None without trials): unlike the
    normal approximation it stays within [0, 1] and keeps its coverage near 0 and 1, where
    the accuracy of automatic decisions lives."""
    if trials <= 0:
        return None
    share, z2 = successes / trials, z * z
    denominator = 1 + z2 / trials
    centre = (share + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials)) / denominator
    # Rounded: at 0 or all successes an end is 0 or 1 exactly, not a float's hair from it.
    return round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)


class Gap(BaseModel):
    """A segment's rate against the whole's: how far it departs, and by what factor."""

    difference: float | None  # the segment's rate minus the whole's
    ratio: float | None  # the segment's rate over the whole's

    @classmethod
    def of(cls, part: float | None, whole: float | None) -> Gap:
        if part is None or whole is None:
            return cls(difference=None, ratio=None)
        return cls(
            difference=round(part - whole, 6), ratio=round(part / whole, 6) if whole else None
        )
