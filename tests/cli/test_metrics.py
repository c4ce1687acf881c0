"""The metric catalogue: in step with the code, named by the Prometheus rules, no ids as labels,
and covering what SREs watch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tandem_cli.metrics import Metric, catalogue, render

ROOT = Path(__file__).resolve().parents[2]
ID_LABELS = {"id", "task_id", "event_id", "review_id", "subject", "trace_id", "reviewer"}


@pytest.fixture(scope="module")
def metrics() -> list[Metric]:
    return catalogue()


def test_the_published_catalogue_is_the_code_s(metrics: list[Metric]) -> None:
    published = (ROOT / "docs" / "metrics.md").read_text()
    assert published == render(metrics), "run: uv run tandem metrics docs/metrics.md"


def test_names_follow_the_prometheus_rules(metrics: list[Metric]) -> None:
    for m in metrics:
        assert re.fullmatch(r"tandem_[a-z][a-z0-9_]*[a-z0-9]", m.name), m.name
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        for unit in ("_ms", "_milliseconds", "_minutes", "_hours", "_percent"):
            assert unit not in m.name, f"{m.name}: use base units (seconds, ratios)"
        if "seconds" in m.name:
            assert m.name.removesuffix("_total").endswith("_seconds"), m.name
        assert m.meaning.endswith("."), f"{m.name} has no sentence of help"
        for label in m.labels:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", label), (m.name, label)
            assert label not in ID_LABELS, f"{m.name} labels series by {label}: unbounded"


def test_what_operators_watch_is_there(metrics: list[Metric]) -> None:
    labels = {m.name: set(m.labels) for m in metrics}
    wanted = {
        "tandem_messages_processed_total": {"service"},  # throughput
        "tandem_messages_failed_total": {"service"},  # failures
        "tandem_batch_processing_seconds": {"service"},  # processing latency
        "tandem_event_age_seconds": {"service"},  # end-to-end latency at each stage
        "tandem_consumer_lag_records": {"service", "topic", "partition"},
        "tandem_batch_size_records": {"service"},
        "tandem_deadletters_total": {"service"},
        "tandem_decisions_total": {"route", "outcome"},
        "tandem_review_queue_depth": {"status"},
        "tandem_review_queue_oldest_age_seconds": {"status"},
        "tandem_time_to_human_decision_seconds": {"task_type"},
        "tandem_human_decisions_total": {"overrode_model"},  # overrides
        "tandem_review_sla_breaches_total": {"action"},
        "tandem_model_confidence": {"model"},
        "tandem_drift_psi": {"feature"},
        "tandem_audit_tree_size": set(),
        "tandem_audit_verify_failures_total": set(),
    }
    for name, needed in wanted.items():
        assert name in labels, f"{name} is missing"
        assert needed <= labels[name], f"{name} lacks {needed - labels[name]}"
