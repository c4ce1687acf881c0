"""A review's task history in the review API: the lineage the audit sink (served over HTTP
on the real broker) holds, read with the caller's own token, and the review API's own rules
before it (who may see the review, and a blind one only after the first look)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import audit_api, review_api
from tests.review_api.test_api import auth, pending, publish_routed, routed
from tests.review_api.test_blind import blind
from tests.service_utils import eventually, free_port

pytestmark = pytest.mark.kafka
ROUTED = "tandem.task.routed.v1"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_review_s_history_comes_from_the_audit_api_with_the_caller_s_token(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str, tmp_path: Path
) -> None:
    ivy, alice = auth("ivy", "auditor"), auth("alice", "reviewer")
    async with review_api(kafka_settings, database_url) as (unset, _):
        await publish_routed(kafka_settings, topics, [routed("h-1"), blind("h-2")])
        [first, *_] = await pending(unset, 2)
        no_audit = await unset.get(f"/v1/reviews/{first['review_id']}/history", headers=ivy)
        assert no_audit.status_code == 503 and "AUDIT_URL" in no_audit.json()["detail"]

    async with audit_api(kafka_settings, tmp_path) as audit_url:
        async with review_api(kafka_settings, database_url, audit_url=audit_url) as (api, _):
            items = {i["task_id"]: i["review_id"] for i in await pending(api, 2)}

            async def history(task_id: str, who: dict[str, str]) -> httpx.Response:
                return await api.get(f"/v1/reviews/{items[task_id]}/history", headers=who)

            async def recorded() -> bool:
                answer = await history("h-1", ivy)
                return answer.status_code == 200 and bool(answer.json()["events"])

            await eventually(recorded, "the routed event in the ledger", timeout=30)
            lineage = (await history("h-1", ivy)).json()
            assert lineage["task_id"] == "h-1"
            assert [(e["type"], e["policy"]) for e in lineage["events"]] == [
                (ROUTED, {"name": "default", "version": 1})
            ]
            # The audit API's roles decide: a reviewer's token is refused there.
            refused = await history("h-1", alice)
            assert refused.status_code == 403
            assert (
                refused.json()["detail"]
                == "the audit API does not let your token read task history"
            )
            # A blind review's history holds the model's view: not before the first look.
            early = await history("h-2", alice)
            assert early.status_code == 409 and "first look" in early.json()["detail"]
            assert (await history("h-2", ivy)).status_code == 200  # auditors see everything
            missing = await api.get(f"/v1/reviews/{uuid.uuid4()}/history", headers=ivy)
            assert missing.status_code == 404

        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        async with review_api(
            kafka_settings, database_url, audit_url=closed, audit_timeout_seconds=1
        ) as (away, _):
            gone = await away.get(f"/v1/reviews/{items['h-1']}/history", headers=ivy)
            assert gone.status_code == 503 and "does not answer" in gone.json()["detail"]
