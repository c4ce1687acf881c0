"""The checker the rule and dashboard tests rely on: it finds every series an expression names,
and the catalogue refuses names and labels the services do not export."""

from __future__ import annotations

import pytest

from tests.ops.catalogue import unknown
from tests.ops.promql import Selector, selectors


def test_selectors_are_found_past_functions_label_lists_ranges_and_offsets() -> None:
    expr = (
        'sum by (service, le) (rate(a_bucket{job="tandem", service=~"$s"}[5m])) / on (service)'
        " group_left (x) sum without (topic) (b_total) > 1e3 unless c offset 15m or vector(0)"
    )
    assert selectors(expr) == [
        Selector("a_bucket", frozenset({"job", "service"})),
        Selector("b_total", frozenset()),
        Selector("c", frozenset()),
    ]


def test_a_selector_must_name_its_metric() -> None:
    with pytest.raises(ValueError, match="name the metric"):
        selectors('{__name__="tandem_messages_processed_total"}')


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(tandem_messages_processed[5m])", "no service exports it"),
        ("tandem_review_queue_depth_total", "no service exports it"),
        ('tandem_review_queue_depth{service="review-api"}', "has no label ['service']"),
        ('tandem_time_to_human_decision_seconds_sum{le="1"}', "has no label ['le']"),
    ],
)
def test_the_catalogue_refuses_what_no_service_exports(expr: str, problem: str) -> None:
    [found] = unknown(selectors(expr))
    assert problem in found


def test_the_catalogue_knows_counters_histograms_and_gauges_by_their_series() -> None:
    expr = (
        'tandem_messages_processed_total{job="tandem", instance="x", service="scoring"}'
        ' + tandem_time_to_human_decision_seconds_bucket{le="1", task_type="t"}'
        ' + tandem_review_queue_depth{status="pending"} + up{job="tandem"}'
    )
    assert unknown(selectors(expr)) == []
