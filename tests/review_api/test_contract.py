"""The OpenAPI document against the running API, as each role: schemathesis sends what the
document allows and what it does not, follows its links from the queue to real reviews, and
finds no server error, no undocumented response, no schema-valid request refused for a reason
the document does not give and no invalid one accepted. Then the times and bodies it
describes, case by case."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tandem_shared.auth import mint_token
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests import contract_harness as contract
from tests.review_api.apps import audited_review_api
from tests.review_api.test_api import auth, publish_routed, routed
from tests.service_utils import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.alone]
ROLES = ("reviewer", "senior", "admin", "auditor")
AUDITOR, ADMIN = auth("ivy", "auditor"), auth("ada", "admin")
# Who sees a review depends on who they are (a claim is its holder's); admins and auditors see
# every review and task, so two of them share everything.
APART = {"reviewer", "senior"}
# Per operation and phase, and stateful sequences: the file stays well within two minutes.
EXAMPLES = 5
SEQUENCES = 60
# Enough waiting work that every role still finds some while the others claim and decide.
SEEDED = 60
# What each role must have reached with ids taken from earlier responses.
READ = "GET /v1/reviews/{review_id}"
ACTIONS = {
    "POST /v1/reviews/{review_id}/claim",
    "POST /v1/reviews/{review_id}/heartbeat",
    "POST /v1/reviews/{review_id}/release",
    "POST /v1/reviews/{review_id}/escalate",
    "POST /v1/reviews/{review_id}/decision",
    "POST /v1/reviews/{review_id}/first-look",
}
REVIEW_API = contract.Contract(
    # Refusals no JSON Schema can state; the document says each in words (the parameter's, the
    # field's or the route's description).
    refusals={
        "GET /v1/reviews": ("cursor is not one this API returned",),
        "GET /v1/stats": ("since must be before until", "the window spans at most"),
        "POST /v1/reviews/{review_id}/decision": ("is not allowed; allowed:",),
        "POST /v1/reviews/{review_id}/first-look": ("is not allowed; allowed:",),
        "POST /v1/admin/policy/validate": ("invalid policy",),
        "POST /v1/admin/policy/simulate": ("invalid policy",),
        "POST /v1/admin/policy/apply": ("invalid policy",),
    },
    operations=(
        # An endless event stream cannot be fetched whole; its responses are checked in
        # test_live.py.
        {"include-path": "/v1/reviews/events", "enabled": False},
        # Each admin, risk and incident call reads (a change also writes) the control topic, a
        # good part of a second: the boundary values of valid requests in bulk are left out
        # (fuzzing still sends some), and the sequences keep to the queue and its reviews.
        {
            "include-path-regex": r"^/v1/(admin/|risks|incidents|alerts)",
            "phases": {
                "coverage": {"generation": {"mode": "negative"}},
                "stateful": {"enabled": False},
            },
        },
    ),
)


async def seed(url: str, kafka: KafkaSettings, topics: Topics) -> None:
    """Open reviews of every kind: plain, critical (two approvals), QA samples, escalated."""
    work = [
        routed(f"seed-{n}", critical=n % 5 == 1, qa=n % 5 == 2, escalate=n % 5 == 3)
        for n in range(SEEDED)
    ]
    await publish_routed(kafka, topics, work)

    async def stored() -> bool:
        async with httpx.AsyncClient() as client:
            page = await client.get(f"{url}/v1/reviews?limit=200", headers=AUDITOR)
        return len(page.json()["items"]) == SEEDED

    await eventually(stored, "the seeded reviews")


def people(directory: Path, role: str) -> Path:
    """Those the run acts as: one person with ``role``, two where they must be kept apart."""
    tokens = [
        mint_token(RuntimeSettings(), f"contract-{role}-{n}", [role])
        for n in range(1, 3 if role in APART else 2)
    ]
    return contract.credentials(directory / f"{role}.json", tokens)


@pytest.fixture
async def server(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str, tmp_path: Path
) -> AsyncIterator[str]:
    """The review API over HTTP with the audit API it reads task history from, both served."""
    async with audited_review_api(kafka_settings, database_url, tmp_path) as (url, _):
        yield url


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_every_role_keeps_to_the_document(
    server: str, kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    await seed(server, kafka_settings, topics)
    who = {role: people(tmp_path, role) for role in ROLES}
    outcomes = await contract.run_roles(server, REVIEW_API, who, EXAMPLES, SEQUENCES)
    found = contract.findings(outcomes)
    assert found == [], f"{len(found)} findings:\n\n" + "\n\n".join(found)
    unreached = {
        role: sorted(outcome.reached)
        for role, outcome in outcomes.items()
        if READ not in outcome.reached or (role != "auditor" and not outcome.reached & ACTIONS)
    }
    assert unreached == {}, f"no real review reached (2xx in the stateful phase): {unreached}"


# A JSON Schema date-time is RFC 3339 with its offset; pydantic alone would take the others.
TIMES = {
    "2026-06-01T00:00:00": 422,  # no offset: it used to reach the database and fail there
    "1700000000": 422,  # seconds since the epoch
    "2026-06-01": 422,
    "0001-01-01T00:00:00+05:00": 200,  # before year 1 in UTC: read as 1970
    "9999-12-31T23:59:59-12:00": 200,  # after year 9999 in UTC: read as 9999-01-01
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_times_are_rfc3339_with_their_offset(api: httpx.AsyncClient) -> None:
    params = (("/v1/reviews", "due_before"), ("/v1/stats", "until"))
    answers = {
        (param, value): (await api.get(path, params={param: value}, headers=AUDITOR)).status_code
        for path, param in params
        for value in TIMES
    }
    assert answers == {(param, v): status for _, param in params for v, status in TIMES.items()}
    early = await api.get("/v1/stats", params={"until": "1960-01-01T00:00:00Z"}, headers=AUDITOR)
    assert early.json()["until"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bodies_are_read_as_their_json_schema_says(api: httpx.AsyncClient) -> None:
    task = {"task_id": "strict-1", "task_type": "tumor_screening", "features": {"x": 1.0}}
    producer = auth("producer", "service")
    refused = {
        "critical 0": await api.post("/v1/tasks", json=task | {"critical": 0}, headers=producer),
        "priority '5'": await api.post(
            "/v1/tasks", json=task | {"priority": "5"}, headers=producer
        ),
        "on 0": await api.post("/v1/admin/kill-switch", json={"on": 0}, headers=ADMIN),
    }
    assert {kind: r.status_code for kind, r in refused.items()} == dict.fromkeys(refused, 422)
    # 50.0 is an integer to JSON Schema; and the answer names where the task is.
    accepted = await api.post("/v1/tasks", json=task | {"priority": 50.0}, headers=producer)
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["location"] == "/v1/tasks/strict-1"
    assert (await api.get(accepted.headers["location"], headers=producer)).status_code == 200
