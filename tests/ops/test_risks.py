"""The starting risk register (deploy/risks) against the alerts: every alert names, in its
`risk` label, risks the register holds, each risk lists back the alerts that watch it, and the
runbook's table says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tandem_policy.policy import BUILT_IN_REASONS
from tandem_shared.risks import SLUG, Risk

from tests.ops.files import ROOT, RUNBOOK, alerts, load

RISK_FILES = sorted((ROOT / "deploy" / "risks").glob("*.yaml"))
_TABLE_ROW = re.compile(r"^\| \[(Tandem\w+)\]\(#\w+\) \|.*\| `([\w,.-]+)` \|$", re.MULTILINE)


def register() -> dict[str, Risk]:
    return {path.stem: Risk.model_validate(load(path)) for path in RISK_FILES}


def watched() -> dict[str, set[str]]:
    """Each alert's risks, from its label."""
    return {rule["alert"]: set(rule["labels"]["risk"].split(",")) for rule in alerts()}


@pytest.mark.parametrize("path", RISK_FILES, ids=lambda p: p.stem)
def test_each_starting_risk_is_valid_and_named_by_an_id(path: Path) -> None:
    Risk.model_validate(load(path))
    assert re.match(SLUG, path.stem)


def test_every_alert_watches_risks_of_the_register_which_list_it_back() -> None:
    risks = register()
    labels = watched()
    assert len(risks) >= 5
    unknown = {alert: ids - risks.keys() for alert, ids in labels.items() if ids - risks.keys()}
    assert unknown == {}
    listed = {
        (risk_id, m.ref)
        for risk_id, risk in risks.items()
        for m in risk.mitigations
        if m.kind == "alert"
    }
    labelled = {(risk_id, alert) for alert, ids in labels.items() for risk_id in ids}
    assert listed == labelled


def test_the_policy_rules_the_register_names_exist() -> None:
    policy = load(ROOT / "deploy" / "local" / "policy.yaml")
    reasons = BUILT_IN_REASONS | {
        rule["reason"] for rules in policy["task_types"].values() for rule in rules.get("rules", [])
    }
    named = {
        m.ref for risk in register().values() for m in risk.mitigations if m.kind == "policy_rule"
    }
    assert named and named <= reasons


def test_the_runbook_says_which_risk_each_alert_watches() -> None:
    table = {alert: set(ids.split(",")) for alert, ids in _TABLE_ROW.findall(RUNBOOK.read_text())}
    assert table == watched()
