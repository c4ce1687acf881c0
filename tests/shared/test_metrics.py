"""Metric helpers of the hot path give what the client's own calls give."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from tandem_shared.telemetry import LATENCY_BUCKETS, observe_all

AMOUNTS = [0.0, 0.005, 0.0050001, 0.2, 3599.9, 3600, 3600.5, 1e12, -3.0, 0.3, 0.3, 0.01]


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    metric = Histogram(
        "ages_seconds", "ages", ["topic"], buckets=LATENCY_BUCKETS, registry=registry
    )
    return registry, metric


def _exported(registry: CollectorRegistry) -> list[bytes]:
    """The exposition without the creation times, which differ between any two metrics."""
    return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]


@pytest.mark.parametrize(
    "amounts", [AMOUNTS, [], [0.1] * 500, [math.inf, 2.0]], ids=["edges", "none", "many", "inf"]
)
def test_observing_all_at_once_exports_what_observing_each_does(amounts: list[float]) -> None:
    one_by_one, each = _histogram()
    at_once, together = _histogram()
    child = each.labels("a")
    for amount in amounts:
        child.observe(amount)
    observe_all(together.labels("a"), amounts)
    assert _exported(at_once) == _exported(one_by_one)


def test_nan_counts_in_no_bucket_but_in_the_sum_as_observe_does() -> None:
    one_by_one, each = _histogram()
    at_once, together = _histogram()
    each.labels("a").observe(math.nan)
    each.labels("a").observe(1.0)
    observe_all(together.labels("a"), [math.nan, 1.0])
    assert _exported(at_once) == _exported(one_by_one)
    assert b'ages_seconds_count{topic="a"} 1.0' in _exported(at_once)
