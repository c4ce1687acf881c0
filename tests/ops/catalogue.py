"""The series the services export (the metric catalogue of `tandem metrics`, read off their
registries): what alert rules and dashboards may name, with the labels each series carries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

from tandem_cli.metrics import catalogue

from tests.ops.promql import Selector

# The series a metric of each type is exposed as; the catalogue names counters with _total.
SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
# What every scrape adds, and the series Prometheus makes itself.
SCRAPE_LABELS = frozenset({"job", "instance"})
PROMETHEUS_SERIES = {
    "up": SCRAPE_LABELS,
    "ALERTS": frozenset({"alertname", "alertstate", "severity"}),
}


@cache
def exported() -> Mapping[str, frozenset[str]]:
    """Every series name the four services export, with the label names it may carry."""
    series: dict[str, frozenset[str]] = dict(PROMETHEUS_SERIES)
    for metric in catalogue():
        labels = frozenset(metric.labels) | SCRAPE_LABELS
        for suffix in SUFFIXES[metric.kind]:
            series[metric.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def unknown(selected: Iterable[Selector]) -> list[str]:
    """What in ``selected`` no service exports: a series name, or a label of a known series."""
    problems = []
    for selector in selected:
        labels = exported().get(selector.name)
        if labels is None:
            problems.append(f"{selector.name}: no service exports it")
        elif selector.labels - labels:
            problems.append(f"{selector.name} has no label {sorted(selector.labels - labels)}")
    return problems
