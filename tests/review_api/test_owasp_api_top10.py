"""The OWASP API Security Top 10 (2023), item by item, against the review API on the real broker.

Each test is named after its item and tries the attack the item describes. Where the whole of
an item is shown elsewhere, the test here tries its sharpest case and says where the rest is:
API1 every role on every review state in test_object_matrix.py, API4 the limits in
test_body_limits.py and test_claim_limits.py, API5 every endpoint in test_access.py."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from tandem_review_api.authorship import SOURCE
from tandem_shared.auth import MAX_SUBJECT, mint_token
from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import DeadLetter, DecisionMade
from tandem_shared.kafka import Outgoing
from tandem_shared.settings import DEV_SECRET, KafkaSettings, RuntimeSettings
from tandem_shared.signing import private_text, public_text
from tandem_shared.topics import Topics

from tests.kafka_utils import TopicReader, produce
from tests.review_api.apps import review_api
from tests.review_api.test_api import NOW, auth, pending, publish_routed, routed
from tests.service_utils import eventually, publish_events

pytestmark = [pytest.mark.kafka, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
# A name that says "an address to fetch": a URL or URI field, a callback, a webhook.
LINK = re.compile(r"(url|uri|href)s?$|callback|webhook", re.IGNORECASE)
ALICE, BOB = auth("alice", "reviewer"), auth("bob", "reviewer")
ADMIN, SERVICE = auth("ada", "admin"), auth("app", "service")


def bearer(
    claims: dict[str, Any], key: str = DEV_SECRET, algorithm: str = "HS256"
) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm=algorithm)}"}


def bearer_of(runtime: RuntimeSettings, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(runtime, 'app', [role])}"}


def claims(**changes: Any) -> dict[str, Any]:
    now = utcnow()
    base = {
        "sub": "mallory",
        "roles": ["admin"],
        "iat": now,
        "exp": now + timedelta(hours=1),
        "aud": "tandem",
        "iss": "tandem",
    }
    return {k: v for k, v in (base | changes).items() if v is not None}


async def claimed(client: httpx.AsyncClient, who: dict[str, str], task_id: str) -> str:
    reviews = {r["task_id"]: r["review_id"] for r in await pending(client, 1, "ada")}
    rid = reviews[task_id]
    assert (await client.post(f"/v1/reviews/{rid}/claim", headers=who)).status_code == 200
    return rid


async def test_api1_broken_object_level_authorization(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """Bob takes the ids of Alice's work and tries them: her review, its task, her decision."""
    async with review_api(kafka_settings, database_url) as (client, _):
        await publish_routed(kafka_settings, topics, [routed("bola-1")])
        rid = await claimed(client, ALICE, "bola-1")
        assert (await client.get(f"/v1/reviews/{rid}", headers=BOB)).status_code == 404
        assert (await client.get("/v1/tasks/bola-1", headers=BOB)).status_code == 404
        assert (await client.get("/v1/tasks/bola-1", headers=ALICE)).status_code == 200
        stolen = await client.post(
            f"/v1/reviews/{rid}/decision",
            json={"outcome": "benign", "rationale": "not mine"},
            headers=BOB,
        )
        assert stolen.status_code == 409
        assert (await client.get(f"/v1/reviews/{rid}", headers=ADMIN)).json()["claimed_by"] == (
            "alice"
        )


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("expired beyond the leeway", bearer(claims(exp=utcnow() - timedelta(minutes=5)))),
        ("signed with another secret", bearer(claims(), key="x" * 32)),
        ("no signature (alg none)", bearer(claims(), key="", algorithm="none")),
        ("for another audience", bearer(claims(aud="elsewhere"))),
        ("from another issuer", bearer(claims(iss="elsewhere"))),
        ("without an expiry", bearer(claims(exp=None))),
        ("a subject longer than a name", bearer(claims(sub="m" * (MAX_SUBJECT + 1)))),
        ("not a JWT", {"Authorization": "Bearer not.a.token"}),
        ("basic instead of bearer", {"Authorization": "Basic YWRhOmFkYQ=="}),
    ],
)
async def test_api2_broken_authentication(
    kafka_settings: KafkaSettings,
    topics: Topics,
    database_url: str,
    case: str,
    headers: dict[str, str],
) -> None:
    async with review_api(kafka_settings, database_url) as (client, _):
        answer = await client.get("/v1/admin/policy", headers=headers)
        assert answer.status_code == 401, (case, answer.text)
        assert answer.json()["detail"], case
        # A valid token with a role nobody defined grants nothing.
        unknown = await client.get("/v1/admin/policy", headers=bearer(claims(roles=["root"])))
        assert unknown.status_code == 403


async def test_api3_broken_object_property_level_authorization(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """A decision body that sets what the server decides (who approved, how many approvals,
    who decided) changes none of it; a reviewer's view carries no claim history."""
    async with review_api(kafka_settings, database_url) as (client, _):
        await publish_routed(kafka_settings, topics, [routed("bopla-1", critical=True)])
        rid = await claimed(client, ALICE, "bopla-1")
        assigned = await client.post(
            f"/v1/reviews/{rid}/decision",
            json={
                "outcome": "malignant",
                "rationale": "one of two",
                "reviewers": ["alice", "bob"],
                "approvals": 2,
                "required_approvals": 1,
                "decided_by": "model",
                "status": "decided",
            },
            headers=ALICE,
        )
        assert assigned.status_code == 200, assigned.text
        assert (assigned.json()["status"], assigned.json()["approvals"]) == (
            "awaiting_approval",
            1,
        )
        task = (await client.get("/v1/tasks/bopla-1", headers=ADMIN)).json()
        assert task["decision"] is None
        view = (await client.get(f"/v1/reviews/{rid}", headers=BOB)).json()
        assert not {"approvals", "approved_by", "claims", "history"} & set(view)


async def test_api4_unrestricted_resource_consumption(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    async with review_api(kafka_settings, database_url) as (client, _):
        huge = await client.post("/v1/tasks", content=b"[" * (2 << 20))  # no token even
        assert huge.status_code == 413
        deep = await client.post("/v1/tasks", content=b"[" * 64 + b"]" * 64, headers=SERVICE)
        assert deep.status_code == 400
        page = await client.get("/v1/reviews", params={"limit": 100_000}, headers=ADMIN)
        assert page.status_code == 422
        since = (utcnow() - timedelta(days=3650)).isoformat()
        window = await client.get("/v1/stats", params={"since": since}, headers=ADMIN)
        assert window.status_code == 422, window.text


async def test_api5_broken_function_level_authorization(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """Every admin function, tried by every role that is not an admin."""
    async with review_api(kafka_settings, database_url) as (client, _):
        paths = (await client.get("/openapi.json")).json()["paths"]
        functions = [
            (method.upper(), path.format(name="tumor_screening"))
            for path, operations in paths.items()
            if path.startswith("/v1/admin/")
            for method in operations
        ]
        assert len(functions) >= 10
        for role in ("reviewer", "senior", "auditor", "service"):
            for method, path in functions:
                if role == "auditor" and method == "GET":
                    continue  # auditors read the policy and its history
                answer = await client.request(method, path, json={}, headers=auth("m", role))
                assert answer.status_code == 403, (role, method, path)


async def test_api6_unrestricted_access_to_sensitive_business_flows(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """Deciding a critical case alone: approve, then come back under the same name; and
    hoarding the queue."""
    async with review_api(kafka_settings, database_url, claims_per_reviewer=2) as (client, _):
        work = [routed("flow-crit", critical=True), *(routed(f"flow-{n}") for n in range(3))]
        await publish_routed(kafka_settings, topics, work)
        rid = await claimed(client, ALICE, "flow-crit")
        first = await client.post(
            f"/v1/reviews/{rid}/decision",
            json={"outcome": "malignant", "rationale": "mine"},
            headers=ALICE,
        )
        assert first.json()["status"] == "awaiting_approval"
        # The same person again, now calling themselves a senior.
        again = await client.post(f"/v1/reviews/{rid}/claim", headers=auth("alice", "senior"))
        assert again.status_code == 409
        taken = [(await client.post("/v1/reviews/next", headers=BOB)).status_code for _ in range(3)]
        assert taken == [200, 200, 409]


async def test_api7_server_side_request_forgery(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """No request makes the API fetch an address a caller gives: no parameter or field of
    the document is a URL."""
    async with review_api(kafka_settings, database_url) as (client, _):
        document = (await client.get("/openapi.json")).json()
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("format") in ("uri", "url", "iri"):
                found.append(where)
            name = str(node.get("name", ""))
            if LINK.search(name):
                found.append(f"{where}.{name}")
            for key, value in node.items():
                if isinstance(value, dict) and LINK.search(key):
                    found.append(f"{where}.{key}")
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                walk(value, f"{where}[{n}]")

    walk({"paths": document["paths"], "components": document.get("components", {})}, "")
    assert found == []


async def test_api8_security_misconfiguration(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """In production: no interactive docs or schema, no default secret, no cross-origin
    access granted, errors without internals."""
    key = Ed25519PrivateKey.generate()
    runtime = RuntimeSettings(
        env="production",
        jwt_secret=SecretStr("p" * 40),
        control_trusted_keys=public_text(key),
    )
    async with review_api(
        kafka_settings,
        database_url,
        runtime=runtime,
        decision_signing_key=SecretStr(private_text(key)),
    ) as (client, _):
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/v1/admin/policy", headers=ADMIN)).status_code == 401
        preflight = await client.options(
            "/v1/reviews",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        bad = await client.post("/v1/tasks", content=b"{", headers=bearer_of(runtime, "service"))
        assert bad.status_code in (400, 422)
        assert "Traceback" not in bad.text and 'File "' not in bad.text


async def test_api9_improper_inventory_management(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """Every route the API serves is in its document, or one of the few operational ones:
    nothing answers that nobody knows of."""
    operational = {"/healthz", "/readyz", "/metrics", "/console"}
    described = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}  # development only
    async with review_api(kafka_settings, database_url) as (client, app):
        documented = set((await client.get("/openapi.json")).json()["paths"])
    served = served_paths(app.routes)
    assert documented <= served
    assert served - documented - operational - described == set()


def served_paths(routes: Iterable[Any]) -> set[str]:
    """The paths of routes, through routers included whole (whose routes FastAPI resolves
    when a request comes)."""
    paths: set[str] = set()
    for route in routes:
        if isinstance(getattr(route, "path", None), str):
            paths.add(route.path)
        elif hasattr(route, "effective_candidates"):
            paths |= served_paths(route.effective_candidates())
        else:
            raise AssertionError(f"a route of unknown kind: {route!r}")
    return paths


async def test_api10_unsafe_consumption_of_apis(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    """What the API consumes from others, the topics, is checked like a request: a forged
    decision and a record that is no event change nothing, and are dead-lettered."""
    key = SecretStr(private_text(Ed25519PrivateKey.generate()))
    async with review_api(kafka_settings, database_url, decision_signing_key=key) as (client, _):
        await publish_routed(kafka_settings, topics, [routed("unsafe-1")])
        [review] = await pending(client, 1)
        item = routed("unsafe-1")
        forged = DecisionMade(
            task_id="unsafe-1",
            task_type=item.task.task_type,
            outcome="benign",
            decided_by="human",
            confidence=0.8,
            model=item.score.model,
            policy=item.policy,
            reviewers=["mallory"],
            submitted_at=NOW,
            decided_at=NOW,
        )
        event = Event.derived(forged, source=SOURCE, subject="unsafe-1", stage="decision")
        await publish_events(kafka_settings, [Outgoing(topics.decisions, event)])
        await produce(kafka_settings.bootstrap_servers, topics.routed, [("junk", b"\x00junk", [])])
        async with TopicReader(kafka_settings.bootstrap_servers, topics.deadletter) as letters:
            records = await letters.until(2)
        errors = {DeadLetter.model_validate_json(r.value).origin_key for r in records}
        assert errors == {"unsafe-1", "junk"}

        async def still_open() -> bool:
            answer = await client.get(f"/v1/reviews/{review['review_id']}", headers=ALICE)
            return answer.status_code == 200 and answer.json()["status"] == "pending"

        await eventually(still_open, "the review to stay open")
