"""The alert rules in deploy/prometheus/rules: valid for promtool, each alert proven to fire on
its trouble and to stay quiet without it (tests/ops/rules/*.test.yml), every series they name
exported by a service, and every alert labelled and linked to its runbook section."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ops.catalogue import unknown
from tests.ops.files import RULE_FILES, RULE_TESTS, alerts, load, promtool, rules
from tests.ops.promql import selectors

ALERTS = sorted(rule["alert"] for rule in alerts())
SEVERITIES = {"critical", "warning", "info"}


def test_every_rule_file_passes_promtool_check() -> None:
    assert RULE_FILES
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_do_what_their_unit_tests_say() -> None:
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_file_has_unit_tests_of_its_own() -> None:
    tested = {
        (path.parent / rule_file).resolve()
        for path in RULE_TESTS
        for rule_file in load(path)["rule_files"]
    }
    assert tested == {path.resolve() for path in RULE_FILES}
    assert {p.name.removesuffix(".test.yml") for p in RULE_TESTS} == {p.stem for p in RULE_FILES}


@pytest.mark.parametrize("alert", ALERTS)
def test_each_alert_has_a_case_where_it_fires_and_one_where_it_must_not(alert: str) -> None:
    cases = [
        case
        for path in RULE_TESTS
        for test in load(path)["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]
    assert any(case.get("exp_alerts") for case in cases), f"{alert} never fires in a test"
    assert any(not case.get("exp_alerts") for case in cases), f"{alert} is never held quiet"


def test_alert_names_are_unique() -> None:
    assert len(ALERTS) == len(set(ALERTS))


def test_the_rules_name_only_series_the_services_export() -> None:
    problems = {
        rule.get("alert", rule.get("record")): unknown(selectors(rule["expr"])) for rule in rules()
    }
    assert {name: found for name, found in problems.items() if found} == {}


def test_the_unit_tests_feed_series_shaped_like_the_services_metrics() -> None:
    series = [
        item["series"]
        for path in RULE_TESTS
        for test in load(path)["tests"]
        for item in test["input_series"]
    ]
    problems = [problem for s in series for problem in unknown(selectors(s))]
    assert problems == []


@pytest.mark.parametrize("alert", alerts(), ids=lambda rule: rule["alert"])
def test_each_alert_has_a_severity_a_summary_and_a_runbook_link(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert annotations["summary"] and annotations["description"]
    # The runbook's section of an alert is a heading that is its name: GitHub anchors it so.
    assert annotations["runbook_url"] == f"docs/operations.md#{alert['alert'].lower()}"
