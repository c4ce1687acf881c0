"""Incidents on the real broker: opened by hand or by Alertmanager's webhook, a timeline to
the resolution and the lesson, each version a control record (and so in the ledger)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tandem_shared.control import read_control
from tandem_shared.incidents import Incident
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.test_api import auth
from tests.service_utils import OPEN_TRUST

pytestmark = pytest.mark.kafka
SAM, IVY, ALERTS = auth("sam", "senior"), auth("ivy", "auditor"), auth("alertmanager", "service")


def notification(status: str, starts: str = "2026-12-06T10:00:00Z") -> dict[str, Any]:
    """What Alertmanager (webhook version 4) posts for one alert."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="TandemDriftAlarm"}',
        "status": status,
        "receiver": "tandem",
        "groupLabels": {"alertname": "TandemDriftAlarm"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "TandemDriftAlarm",
                    "feature": "mean_radius",
                    "risk": "missed-malignancy, Not A Risk Id",
                },
                "annotations": {"summary": "mean_radius of tumor_screening/1 drifts"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": "6f2b1c0d9e8a7b65",
            }
        ],
    }


async def test_an_incident_opened_by_hand_runs_to_its_lesson(
    admin_api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    api = admin_api
    body = {"title": "Benign decided for a malignant case", "risks": ["missed-malignancy"]}
    assert (await api.post("/v1/incidents/open", json=body, headers=IVY)).status_code == 403
    opened = await api.post("/v1/incidents/open", json=body, headers=SAM)
    assert opened.status_code == 201, opened.text
    incident_id = opened.json()["id"]
    steps = "/v1/incidents/" + incident_id + "/timeline"
    for kind, text in (
        ("acknowledged", "looking"),
        ("action", "kill switch on for tumor_screening"),
        ("resolution", "threshold raised in policy v4"),
    ):
        added = await api.post(steps, json={"kind": kind, "text": text}, headers=SAM)
        assert added.status_code == 200, added.text
    late = await api.post(steps, json={"kind": "action", "text": "x"}, headers=SAM)
    assert late.status_code == 409  # closed: a lesson or a note only
    lesson = {"kind": "lesson", "text": "watch the east clinic", "risks": ["segment-east"]}
    done = (await api.post(steps, json=lesson, headers=auth("ada", "admin"))).json()
    assert (done["status"], done["version"], done["risks"]) == (
        "closed",
        5,
        ["missed-malignancy", "segment-east"],
    )
    assert [(e["kind"], e["by"]) for e in done["timeline"]] == [
        ("opened", "sam"),
        ("acknowledged", "sam"),
        ("action", "sam"),
        ("resolution", "sam"),
        ("lesson", "ada"),
    ]
    closed = (await api.get("/v1/incidents?status=closed", headers=IVY)).json()
    assert [i["id"] for i in closed] == [incident_id]
    assert (await api.get("/v1/incidents?status=open", headers=IVY)).json() == []
    assert (await api.get("/v1/incidents/inc-none", headers=IVY)).status_code == 404
    changes = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
    change = changes[f"incident/{incident_id}"]
    assert (change.kind, change.changed_by) == ("incident", "ada")
    assert Incident.model_validate(change.value).version == 5


async def test_alertmanager_opens_an_incident_once_per_firing(
    admin_api: httpx.AsyncClient,
) -> None:
    api = admin_api
    refused = await api.post("/v1/alerts", json=notification("firing"), headers=SAM)
    assert refused.status_code == 403  # Alertmanager's token has the service role
    [opened] = (await api.post("/v1/alerts", json=notification("firing"), headers=ALERTS)).json()
    assert (opened["id"], opened["status"], opened["alert"]) == (
        "alert-6f2b1c0d9e8a7b65",
        "open",
        "TandemDriftAlarm",
    )
    assert opened["risks"] == ["missed-malignancy"]  # the label's ids; not what is none
    # Alertmanager repeats a firing alert every repeat_interval: one step for it.
    assert (await api.post("/v1/alerts", json=notification("firing"), headers=ALERTS)).json() == []
    [resolved] = (
        await api.post("/v1/alerts", json=notification("resolved"), headers=ALERTS)
    ).json()
    assert [e["kind"] for e in resolved["timeline"]] == ["fired", "alert_resolved"]
    assert resolved["status"] == "open"  # people close it, with what they learnt
    repeated = await api.post("/v1/alerts", json=notification("resolved"), headers=ALERTS)
    assert repeated.json() == []  # a resolution sent again adds nothing
    url = f"/v1/incidents/{opened['id']}/timeline"
    await api.post(url, json={"kind": "resolution", "text": "upstream unit fixed"}, headers=SAM)
    # Firing again later reopens it.
    again = notification("firing", starts="2026-12-07T08:00:00Z")
    [reopened] = (await api.post("/v1/alerts", json=again, headers=ALERTS)).json()
    assert (reopened["status"], reopened["version"]) == ("open", 4)
    # What a rule says beyond what an incident keeps is cut, not refused.
    wordy = notification("firing")
    wordy["alerts"][0]["fingerprint"] = "1111bbbb"
    wordy["alerts"][0]["annotations"]["summary"] = "x" * 5000
    wordy["alerts"][0]["labels"]["risk"] = ",".join(f"r{n}" for n in range(80))
    [cut] = (await api.post("/v1/alerts", json=wordy, headers=ALERTS)).json()
    assert len(cut["timeline"][0]["text"]) == 2000 and len(cut["risks"]) == 50
    # A resolved alert never seen firing adds nothing.
    other = notification("resolved")
    other["alerts"][0]["fingerprint"] = "0000aaaa"
    assert (await api.post("/v1/alerts", json=other, headers=ALERTS)).json() == []
