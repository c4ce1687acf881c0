"""Admin endpoints publish model versions to the control topic, for admins only."""

from __future__ import annotations

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from tandem_review_api import admin
from tandem_shared.control import ModelState, model_state, read_control
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.test_api import auth
from tests.service_utils import OPEN_TRUST

pytestmark = pytest.mark.kafka


async def test_promote_and_roll_back_through_the_control_topic(
    admin_api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    admin = auth("root", "admin")
    assert (
        await admin_api.post("/v1/admin/models/tumor_screening/rollback", headers=admin)
    ).status_code == 409
    for version in ("1", "2"):
        response = await admin_api.post(
            "/v1/admin/models/tumor_screening/promote",
            json={"version": version, "override_reason": "tests"},
            headers=admin,
        )
        assert response.status_code == 200, response.text
    assert response.json()["state"] == {"live": "2", "previous": "1", "shadow": None}
    back = await admin_api.post("/v1/admin/models/tumor_screening/rollback", headers=admin)
    assert back.json()["state"] == {"live": "1", "previous": "2", "shadow": None}

    changes = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
    assert model_state(changes, "tumor_screening") == ModelState(live="1", previous="2")
    assert changes["model/tumor_screening"].changed_by == "root"
    shown = await admin_api.get("/v1/admin/models/tumor_screening", headers=admin)
    assert shown.json()["state"]["live"] == "1"

    url = "/v1/admin/models/tumor_screening/shadow"
    candidate = await admin_api.post(url, json={"version": "3"}, headers=admin)
    assert candidate.json()["state"] == {"live": "1", "previous": "2", "shadow": "3"}
    assert (await admin_api.post(url, json={"version": "1"}, headers=admin)).status_code == 409
    stopped = await admin_api.post(url, json={"version": None}, headers=admin)
    assert stopped.json()["state"]["shadow"] is None


async def test_a_control_change_while_kafka_is_down_is_503(
    admin_api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control changes are not in the outbox: they need Kafka, and say so when it is down."""

    async def down(*_: object) -> None:
        raise KafkaConnectionError("no broker answers")

    monkeypatch.setattr(admin, "read_control", down)
    url = "/v1/admin/models/tumor_screening/rollback"
    response = await admin_api.post(url, headers=auth("root", "admin"))
    assert response.status_code == 503
    assert "Kafka is not reachable" in response.json()["detail"]


async def test_only_admins_change_models(admin_api: httpx.AsyncClient) -> None:
    url = "/v1/admin/models/tumor_screening/promote"
    for role in ("reviewer", "senior", "auditor", "service"):
        response = await admin_api.post(url, json={"version": "2"}, headers=auth("x", role))
        assert response.status_code == 403, role
    bad = await admin_api.post(url, json={"version": "../../etc"}, headers=auth("root", "admin"))
    assert bad.status_code == 422


async def test_only_admins_change_policies_and_auditors_may_read_them(
    admin_api: httpx.AsyncClient,
) -> None:
    changes = [
        ("/v1/admin/policy/validate", {"document": "name: x"}),
        ("/v1/admin/policy/apply", {"document": "name: x"}),
        ("/v1/admin/policy/rollback", None),
        ("/v1/admin/kill-switch", {"on": True}),
    ]
    for role in ("reviewer", "senior", "auditor", "service"):
        for url, body in changes:
            response = await admin_api.post(url, json=body, headers=auth("x", role))
            assert response.status_code == 403, (role, url)
    for role, allowed in (("auditor", 200), ("reviewer", 403)):
        for url in ("/v1/admin/policy", "/v1/admin/policy/history"):
            assert (await admin_api.get(url, headers=auth("x", role))).status_code == allowed
    invalid = await admin_api.post(
        "/v1/admin/policy/validate", json={"document": "name: x"}, headers=auth("root", "admin")
    )
    assert invalid.status_code == 422 and "task_types" in invalid.json()["detail"]


def evidence(candidate_accuracy: float) -> dict[str, object]:
    scores = {"brier": 0.1, "ece": 0.05, "automation_rate": 0.7}
    return {
        "model": "tumor_screening",
        "live": "1",
        "candidate": "2",
        "rows": 200,
        "margin": 0.05,
        "live_scores": {"accuracy": 0.90, **scores},
        "candidate_scores": {"accuracy": candidate_accuracy, **scores},
    }


async def test_promotion_goes_through_the_gate_and_records_its_evidence(
    admin_api: httpx.AsyncClient, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    url = "/v1/admin/models/tumor_screening/promote"
    admin = auth("root", "admin")
    bare = await admin_api.post(url, json={"version": "2"}, headers=admin)
    assert bare.status_code == 409
    assert "no validation evidence was given" in bare.json()["detail"]
    worse = await admin_api.post(
        url, json={"version": "2", "evidence": evidence(0.80)}, headers=admin
    )
    assert worse.status_code == 409
    assert "less accurate overall: 0.800 against 0.900 live" in worse.json()["detail"]
    assert (
        model_state(
            await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST),
            "tumor_screening",
        )
        is None
    )  # nothing went live

    better = await admin_api.post(
        url, json={"version": "2", "evidence": evidence(0.95)}, headers=admin
    )
    assert better.status_code == 200, better.text
    forced = await admin_api.post(
        url,
        json={"version": "3", "evidence": evidence(0.80), "override_reason": "board decision 12"},
        headers=admin,
    )
    assert forced.status_code == 200, forced.text
    changes = await read_control(kafka_settings.bootstrap_servers, topics, OPEN_TRUST)
    assert model_state(changes, "tumor_screening") == ModelState(live="3", previous="2")
    second = changes["model-registry/tumor_screening/2"]
    assert (second.kind, second.changed_by) == ("model_registry", "root")
    assert second.value["evidence"]["candidate_scores"]["accuracy"] == 0.95
    assert second.value["refused_for"] == []
    third = changes["model-registry/tumor_screening/3"].value
    assert third["override_reason"] == "board decision 12"
    assert third["refused_for"] == [
        "the evidence is about version 2, not 3",
    ]
