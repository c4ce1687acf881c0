"""Role × endpoint × object: every action on a review, by every kind of caller, on reviews in
every state, their own and other people's (real broker, SQLite and PostgreSQL).

Each cell gets a review of its own, brought to its state first, so one cell's action cannot
change another's. A refusal must leave the review exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import review_api
from tests.review_api.test_api import auth, publish_routed, routed
from tests.service_utils import eventually

pytestmark = pytest.mark.kafka

PEOPLE = {
    "reviewer": auth("alice", "reviewer"),
    "senior": auth("sam", "senior"),
    "admin": auth("ada", "admin"),
    "auditor": auth("ivy", "auditor"),
    "service": auth("svc", "service"),
}
BOB = auth("bob", "reviewer")
ACTIONS = ("read", "claim", "heartbeat", "release", "escalate", "decision")
# The states a review is brought to before the action. "mine" and "approved" are the caller's
# own doing where the caller may claim; for the others they are bob's.
OBJECTS = ("pending", "mine", "others", "escalated", "decided", "approved")

OK, GONE, BUSY, ROLE = 200, 404, 409, 403
NO_CONTENT = 204
# What a reviewer gets for each action on each object: 404 where the review is not theirs to
# see, 409 where they may see it but not do that now.
REVIEWER: dict[str, tuple[int, ...]] = {
    #            read  claim heartbeat release escalate decision
    "pending": (OK, OK, BUSY, BUSY, BUSY, BUSY),
    "mine": (OK, OK, OK, NO_CONTENT, NO_CONTENT, OK),
    "others": (GONE, BUSY, BUSY, BUSY, BUSY, BUSY),
    "escalated": (GONE, BUSY, BUSY, BUSY, BUSY, BUSY),
    "decided": (GONE, BUSY, BUSY, BUSY, BUSY, BUSY),
    "approved": (GONE, BUSY, BUSY, BUSY, BUSY, BUSY),
}
# A senior also sees and takes escalations.
SENIOR = {**REVIEWER, "escalated": (OK, OK, BUSY, BUSY, BUSY, BUSY)}
# An admin reads everything and acts as a senior.
ADMIN = {name: (OK, *codes[1:]) for name, codes in {**SENIOR, "mine": REVIEWER["mine"]}.items()}
# An auditor reads everything and changes nothing; a service reads no review at all.
AUDITOR = dict.fromkeys(OBJECTS, (OK, ROLE, ROLE, ROLE, ROLE, ROLE))
SERVICE = {name: (ROLE,) * len(ACTIONS) for name in OBJECTS}
EXPECTED: dict[str, dict[str, tuple[int, ...]]] = {
    "reviewer": REVIEWER,
    "senior": SENIOR,
    "admin": ADMIN,
    "auditor": AUDITOR,
    "service": SERVICE,
}
CLAIMS = {"reviewer", "senior", "admin"}


def task_id(obj: str, action: str, role: str) -> str:
    return f"{obj}.{action}.{role}"


async def run(client: httpx.AsyncClient, action: str, rid: str, who: dict[str, str]) -> int:
    url = f"/v1/reviews/{rid}"
    bodies: dict[str, Any] = {
        "escalate": {"reason": "needs a second look"},
        "decision": {"outcome": "malignant", "rationale": "seen"},
    }
    if action == "read":
        return (await client.get(url, headers=who)).status_code
    answer = await client.post(f"{url}/{action}", json=bodies.get(action), headers=who)
    return answer.status_code


async def ok(client: httpx.AsyncClient, action: str, rid: str, who: dict[str, str]) -> None:
    code = await run(client, action, rid, who)
    assert code in (OK, NO_CONTENT), (action, rid, code)


async def as_admin_sees(client: httpx.AsyncClient, rid: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/reviews/{rid}", headers=PEOPLE["admin"])
    assert answer.status_code == OK, answer.text
    fields = ("status", "claimed_by", "lease_expires_at", "outcome", "escalation_reason")
    item: dict[str, Any] = answer.json()
    return {k: item.get(k) for k in fields}


async def bring_to(client: httpx.AsyncClient, obj: str, rid: str, role: str) -> None:
    actor = PEOPLE[role] if role in CLAIMS else BOB
    steps: dict[str, Callable[[], Any]] = {
        "mine": lambda: ok(client, "claim", rid, actor),
        "others": lambda: ok(client, "claim", rid, BOB),
    }
    if obj in steps:
        await steps[obj]()
    elif obj in ("decided", "approved"):
        holder = BOB if obj == "decided" else actor
        await ok(client, "claim", rid, holder)
        await ok(client, "decision", rid, holder)


async def test_every_role_on_every_review_state_gets_what_the_rules_say(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    cells = [(o, a, r) for o in OBJECTS for a in ACTIONS for r in EXPECTED]
    work = [
        routed(
            task_id(o, a, r),
            escalate=o == "escalated",
            # Two approvals: the caller's approval leaves it open, awaiting another.
            critical=o == "approved",
        )
        for o, a, r in cells
    ]
    # Everyone here holds many claims at once: the per-person limit is tested apart.
    async with review_api(kafka_settings, database_url, claims_per_reviewer=1000) as (client, _):
        await publish_routed(kafka_settings, topics, work)
        ids: dict[str, str] = {}

        async def all_routed() -> bool:
            cursor = None
            ids.clear()
            while True:
                params = {"limit": 200} | ({"cursor": cursor} if cursor else {})
                page = (
                    await client.get("/v1/reviews", params=params, headers=PEOPLE["admin"])
                ).json()
                ids.update({i["task_id"]: i["review_id"] for i in page["items"]})
                cursor = page.get("next_cursor")
                if not cursor:
                    return len(ids) == len(cells)

        await eventually(all_routed, "every cell's review to be routed")
        for obj, action, role in cells:
            await bring_to(client, obj, ids[task_id(obj, action, role)], role)

        wrong: list[str] = []
        for obj, action, role in cells:
            rid = ids[task_id(obj, action, role)]
            before = await as_admin_sees(client, rid)
            expected = EXPECTED[role][obj][ACTIONS.index(action)]
            got = await run(client, action, rid, PEOPLE[role])
            if got != expected:
                wrong.append(f"{role} {action} on {obj}: {got}, not {expected}")
            if got >= 400 and await as_admin_sees(client, rid) != before:
                wrong.append(f"{role} {action} on {obj}: refused ({got}) yet changed the review")
        anonymous = await run(client, "read", ids[task_id("pending", "read", "reviewer")], {})
        assert anonymous == 401
    assert wrong == [], "\n".join(wrong)
