"""The risk register on the real broker: risks are versioned control records (so the ledger
keeps each change with its author); admins write any, seniors their own, auditors read."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tandem_cli.main import app
from tandem_shared.control import read_control
from tandem_shared.risks import RiskRecord
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics
from typer.testing import CliRunner

from tests.ops.files import ROOT
from tests.review_api.test_api import auth
from tests.service_utils import OPEN_TRUST

pytestmark = pytest.mark.kafka
ADA, IVY, SAM = auth("ada", "admin"), auth("ivy", "auditor"), auth("sam", "senior")
URL = "/v1/risks/missed-malignancy"
runner = CliRunner()


def risk(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "A malignant tumour decided benign automatically",
        "harm": "A patient's cancer is not followed up.",
        "task_types": ["tumor_screening"],
        "segments": ["clinic=east"],
        "likelihood": "unlikely",
        "impact": "severe",
        "owner": "sam",
        "mitigations": [
            {"kind": "policy_rule", "ref": "large_lesion", "note": "large lesions go to people"},
            {"kind": "alert", "ref": "TandemDriftAlarm"},
        ],
        "review_by": "2027-03-31",
    }
    return {**body, **changes}


async def test_a_risk_is_versioned_on_the_control_topic_and_kept_by_its_owner(
    admin_api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    api = admin_api
    # A senior may not open a risk, nor an auditor write one; an admin may.
    assert (await api.put(URL, json=risk(), headers=SAM)).status_code == 403
    assert (await api.put(URL, json=risk(), headers=IVY)).status_code == 403
    first = await api.put(URL, json=risk(), headers=ADA)
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["changed_by"]) == (1, "ada")

    # Its owner keeps it: a new version, authored by them; another senior may not.
    lower = risk(likelihood="rare", review_by="2020-01-01")
    second = await api.put(URL, json=lower, headers=SAM)
    assert (second.json()["version"], second.json()["changed_by"]) == (2, "sam")
    assert (await api.put(URL, json=lower, headers=auth("tom", "senior"))).status_code == 403

    [listed] = (await api.get("/v1/risks", headers=IVY)).json()
    assert (listed["id"], listed["version"], listed["likelihood"]) == (
        "missed-malignancy",
        2,
        "rare",
    )
    assert listed["review_overdue"] is True  # reviewed by 2020: past
    history = (await api.get(f"{URL}/history", headers=IVY)).json()
    assert [(h["version"], h["changed_by"]) for h in history] == [(1, "ada"), (2, "sam")]
    assert (await api.get("/v1/risks/nothing/history", headers=IVY)).status_code == 404
    assert (await api.get("/v1/risks", headers=auth("rui", "reviewer"))).status_code == 403

    # On the control topic (and so in the ledger): the latest version, kind risk, its author.
    changes = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
    change = changes["risk/missed-malignancy"]
    assert (change.kind, change.name, change.changed_by) == ("risk", "missed-malignancy", "sam")
    assert RiskRecord.model_validate(change.value).version == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (risk(likelihood="often"), "likelihood"),
        (risk(impact=3), "impact"),
        (risk(owner=""), "owner"),
        (risk(review_by="soon"), "review_by"),
        (risk(mitigations=[{"kind": "prayer", "ref": "x"}]), "kind"),
        ({**risk(), "version": 9}, "version"),  # the register numbers versions itself
    ],
)
async def test_a_risk_that_does_not_fit_is_refused_with_the_field(
    admin_api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    refused = await admin_api.put(URL, json=body, headers=ADA)
    assert refused.status_code == 422
    assert field in str(refused.json()["detail"])
    assert (await admin_api.put("/v1/risks/Bad%20Id", json=risk(), headers=ADA)).status_code == 422


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_tandem_risk_writes_and_lists_the_register(server: str, tmp_path: Path) -> None:
    document = tmp_path / "risk.yaml"
    document.write_text(yaml.safe_dump(risk(review_by=date(2027, 3, 31))))

    async def tandem(*args: str) -> str:
        result = await asyncio.to_thread(runner.invoke, app, ["risk", *args, "--url", server])
        assert result.exit_code == 0, result.output
        return result.output

    assert "missed-malignancy v1 written by tandem-risk" in await tandem(
        "put", "missed-malignancy", str(document)
    )
    await tandem("put", "missed-malignancy", str(document))
    listed = await tandem("list")
    assert "missed-malignancy" in listed and "policy_rule:large_lesion" in listed
    assert "2027-03-31" in listed and "overdue" not in listed
    versions = (await tandem("history", "missed-malignancy")).splitlines()
    assert [v.split()[0] for v in versions] == ["v1", "v2"]
    refused = await asyncio.to_thread(
        runner.invoke, app, ["risk", "history", "nothing", "--url", server]
    )
    assert refused.exit_code == 1 and "404" in refused.output

    # The starting register loads whole, and a second load writes nothing it already holds.
    starting = ROOT / "deploy" / "risks"
    files = sorted(p.stem for p in starting.glob("*.yaml"))
    loaded = (await tandem("load", str(starting))).splitlines()
    assert [line.split()[1] for line in loaded] == files
    assert all(line.endswith("v1 written by tandem-risk") for line in loaded)
    again = (await tandem("load", str(starting))).splitlines()
    assert again == [f"risk {risk_id} v1 unchanged" for risk_id in files]
