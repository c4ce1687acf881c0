"""Error budgets for automatic decisions, with a finite-sample guarantee.

A risk owner says "at most ``max_error`` of automatic decisions may be wrong, and I want to be
``confidence`` sure of it". Calibration turns that into a confidence threshold by Learn then
Test (Angelopoulos et al., 2021): over a grid of thresholds fixed in advance, from the strictest
down, each threshold's hypothesis "the error rate of the decisions it automates exceeds the
budget" is tested with an exact binomial p-value on labelled cases; fixed-sequence testing goes
down while each is rejected at level 1 - ``confidence`` and keeps the last. Whatever the model,
if the labelled cases are exchangeable with live traffic, the error rate of the automatic
decisions at the chosen threshold is within the budget with probability at least
``confidence``. The live watch puts a one-sided Clopper-Pearson bound on the error rate the QA
samples show, against the same budget.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Thresholds tried, strictest first: fixed before any data is seen, as the guarantee needs.
GRID = tuple(round(1 - i / 1000, 3) for i in range(0, 501))  # 1.000 down to 0.500


class TooFewLabels(ValueError):
    """No threshold can be promised with the labels given: the message says how many it takes."""


@dataclass(frozen=True)
class Case:
    """One labelled case: the model's confidence, and whether its prediction was right;
    ``segment``, its value of a segment attribute where one was asked for."""

    confidence: float
    right: bool
    segment: str | None = None


@dataclass(frozen=True)
class Calibration:
    threshold: float
    cases: int  # labelled cases calibrated on
    automated: int  # of them at or above the threshold
    errors: int  # of those, wrong
    p_value: float  # of "the error rate there exceeds the budget"
    upper_bound: float  # the error rate's upper bound at the confidence level (Clopper-Pearson)
    automation_rate: float  # automated / cases


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (k is the small side here)."""
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
        + (n - i) * log_q
        for i in range(k + 1)
    ]  # fmt: skip
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def upper_bound(errors: int, trials: int, confidence: float) -> float:
    """The one-sided Clopper-Pearson upper bound of an error rate: the largest p for which
    seeing ``errors`` or fewer in ``trials`` is still as likely as 1 - ``confidence``."""
    if trials <= 0:
        return 1.0
    if errors >= trials:
        return 1.0
    low, high = errors / trials, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if binomial_cdf(errors, trials, middle) > 1 - confidence:
            low = middle
        else:
            high = middle
    return high


def fewest_cases(max_error: float, confidence: float) -> int:
    """The automated cases it takes, none of them wrong, to promise the budget at all."""
    return math.ceil(math.log(1 - confidence) / math.log1p(-max_error))


def calibrate(
    cases: Sequence[Case], max_error: float, confidence: float, seed: int = 0
) -> Calibration:
    """The lowest threshold of GRID that fixed-sequence testing reaches (see the module's
    docstring); TooFewLabels when none can be promised.

    A quarter of the cases (drawn with ``seed``) only choose where the sequence starts: the
    strictest threshold with enough confident cases to be testable at all. The tests run on
    the other three quarters, so the order they run in owes nothing to their own labels."""
    drawn = list(cases)
    random.Random(seed).shuffle(drawn)
    pilot, tested = drawn[: len(drawn) // 4], drawn[len(drawn) // 4 :]
    need = fewest_cases(max_error, confidence)
    start = _start(pilot, need * len(pilot) / max(len(tested), 1))
    ordered = sorted(tested, key=lambda c: c.confidence, reverse=True)
    passed: tuple[float, int, int, float] | None = None  # threshold, automated, errors, p
    taken = errors = 0
    for threshold in GRID[start:]:
        while taken < len(ordered) and ordered[taken].confidence >= threshold:
            errors += not ordered[taken].right
            taken += 1
        p_value = binomial_cdf(errors, taken, max_error) if taken else 1.0
        if p_value > 1 - confidence:
            break
        passed = (threshold, taken, errors, p_value)
    if passed is None:
        above = sum(c.confidence >= GRID[start] for c in tested)
        raise TooFewLabels(
            f"{len(cases)} labelled cases cannot promise an error of at most {max_error:g} "
            f"with {confidence:.0%} confidence: the test needs {need} confident cases without "
            f"an error (more with errors) among the {len(tested)} it runs on, and had {above}"
        )
    threshold, taken, errors, p_value = passed
    return Calibration(
        threshold=threshold,
        cases=len(tested),
        automated=taken,
        errors=errors,
        p_value=p_value,
        upper_bound=upper_bound(errors, taken, confidence),
        automation_rate=taken / len(tested),
    )


def calibrate_segments(
    cases: Mapping[str, Sequence[Case]], max_error: float, confidence: float, seed: int = 0
) -> dict[str, Calibration | TooFewLabels]:
    """A threshold per segment, each from its own cases, and every promise together at
    ``confidence``: each segment is tested at 1 - (1 - ``confidence``) / segments (Bonferroni),
    so with probability at least ``confidence`` no segment's automatic decisions are wrong more
    often than the budget. A segment whose cases are too few gets its refusal."""
    each = segment_confidence(confidence, len(cases))
    out: dict[str, Calibration | TooFewLabels] = {}
    for value, within in sorted(cases.items()):
        try:
            out[value] = calibrate(within, max_error, each, seed)
        except TooFewLabels as exc:
            out[value] = exc
    return out


def by_segment(cases: Iterable[Case]) -> dict[str, list[Case]]:
    """The cases by their segment value, for ``calibrate_segments``; those without one are
    left out (a holdout row belongs to no segment)."""
    grouped: dict[str, list[Case]] = {}
    for case in cases:
        if case.segment is not None:
            grouped.setdefault(case.segment, []).append(case)
    return grouped


def segment_confidence(confidence: float, segments: int) -> float:
    """The confidence each of ``segments`` is promised at, for all of them to hold together."""
    return 1 - (1 - confidence) / max(segments, 1)


def _start(pilot: Sequence[Case], enough: float) -> int:
    """Where in GRID the tests start: the strictest threshold at which the pilot cases hold
    ``enough`` confident ones (scaled to the pilot's share), or the loosest if none does."""
    for index, threshold in enumerate(GRID):
        if sum(c.confidence >= threshold for c in pilot) >= enough:
            return index
    return len(GRID) - 1


def automation_curve(
    cases: Sequence[Case], budgets: Sequence[float], confidence: float
) -> list[tuple[float, Calibration | None]]:
    """What each budget would cost: its calibration, or None where it cannot be promised."""
    out: list[tuple[float, Calibration | None]] = []
    for budget in budgets:
        try:
            out.append((budget, calibrate(cases, budget, confidence)))
        except TooFewLabels:
            out.append((budget, None))
    return out
