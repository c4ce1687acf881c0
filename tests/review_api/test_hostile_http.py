"""Hostile requests over HTTP: each kind gets a 4xx with a message, never a 500, and nothing is
stored (SQLite and PostgreSQL, real broker)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from tandem_review_api.tables import reviews, tasks
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.review_api.apps import review_api
from tests.review_api.test_api import auth

pytestmark = pytest.mark.kafka
SERVICE, REVIEWER, ADMIN = auth("p", "service"), auth("r", "reviewer"), auth("a", "admin")
JSON = {"content-type": "application/json"}
TASK = {"task_id": "ok-1", "task_type": "tumor_screening", "features": {"mean_radius": 1.0}}


def task(**changes: Any) -> bytes:
    return json.dumps(TASK | changes).encode()


def nested(depth: int) -> bytes:
    return (
        b'{"task_id":"d","task_type":"t","features":{},"context":'
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


UNSIGNED = (
    f"{b64(json.dumps({'alg': 'none'}))}.{b64(json.dumps({'sub': 'x', 'roles': ['admin']}))}."
)
LAUGHS = "\n".join(
    [
        "a: &a [x,x,x,x,x,x,x,x,x]",
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]",
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]",
        "d: [*c,*c,*c,*c,*c,*c,*c,*c,*c]",
    ]
)


# (method, path, headers, body): each must answer 4xx with a detail, and store nothing.
CORPUS: dict[str, tuple[str, str, dict[str, str], bytes | None]] = {
    "body not JSON": ("POST", "/v1/tasks", SERVICE | JSON, b"{not json"),
    "body truncated": ("POST", "/v1/tasks", SERVICE | JSON, task()[:-5]),
    "body an array": ("POST", "/v1/tasks", SERVICE | JSON, b"[1, 2]"),
    "body null": ("POST", "/v1/tasks", SERVICE | JSON, b"null"),
    "body a string": ("POST", "/v1/tasks", SERVICE | JSON, b'"task"'),
    "body empty": ("POST", "/v1/tasks", SERVICE | JSON, b""),
    "body nested 10,000 deep": ("POST", "/v1/tasks", SERVICE | JSON, nested(10_000)),
    "body nested 33 deep": ("POST", "/v1/tasks", SERVICE | JSON, nested(33)),
    "body of 2 MiB": ("POST", "/v1/tasks", SERVICE | JSON, task(context={"x": "a" * 2**21})),
    "NaN feature": ("POST", "/v1/tasks", SERVICE | JSON, task()[:-2] + b', "x": NaN}}'),
    "Infinity feature": ("POST", "/v1/tasks", SERVICE | JSON, task()[:-2] + b', "x": Infinity}}'),
    "1e999 feature": ("POST", "/v1/tasks", SERVICE | JSON, task()[:-2] + b', "x": 1e999}}'),
    "huge integer feature": (
        "POST",
        "/v1/tasks",
        SERVICE | JSON,
        task()[:-2] + b', "x": ' + b"9" * 5000 + b"}}",
    ),
    "lone surrogate in id": (
        "POST",
        "/v1/tasks",
        SERVICE | JSON,
        b'{"task_id":"\\ud800","task_type":"t","features":{}}',
    ),
    "invalid UTF-8": (
        "POST",
        "/v1/tasks",
        SERVICE | JSON,
        b'{"task_id":"\xff\xfe","task_type":"t","features":{}}',
    ),
    "NUL in id": ("POST", "/v1/tasks", SERVICE | JSON, task(task_id="a\u0000b")),
    "id of 10,000 characters": ("POST", "/v1/tasks", SERVICE | JSON, task(task_id="x" * 10_000)),
    "empty id": ("POST", "/v1/tasks", SERVICE | JSON, task(task_id="")),
    "id a number": ("POST", "/v1/tasks", SERVICE | JSON, task(task_id=12)),
    "id with a slash": ("POST", "/v1/tasks", SERVICE | JSON, task(task_id="a/../b")),
    "task type missing": (
        "POST",
        "/v1/tasks",
        SERVICE | JSON,
        json.dumps({"task_id": "m", "features": {}}).encode(),
    ),
    "features a list": ("POST", "/v1/tasks", SERVICE | JSON, task(features=[1, 2])),
    "features null": ("POST", "/v1/tasks", SERVICE | JSON, task(features=None)),
    "priority out of range": ("POST", "/v1/tasks", SERVICE | JSON, task(priority=1000)),
    "critical a string": ("POST", "/v1/tasks", SERVICE | JSON, task(critical="very")),
    "wrong content type": ("POST", "/v1/tasks", SERVICE | {"content-type": "text/plain"}, b"hello"),
    "form body": (
        "POST",
        "/v1/tasks",
        SERVICE | {"content-type": "application/x-www-form-urlencoded"},
        b"task_id=x",
    ),
    "length that lies": ("POST", "/v1/tasks", SERVICE | JSON | {"content-length": "abc"}, b"{}"),
    "no token": ("POST", "/v1/tasks", JSON, task()),
    "empty bearer": ("POST", "/v1/tasks", {"authorization": "Bearer "} | JSON, task()),
    "basic auth": ("POST", "/v1/tasks", {"authorization": "Basic dXNlcjpwYXNz"} | JSON, task()),
    "token of garbage": ("POST", "/v1/tasks", {"authorization": "Bearer a.b.c"} | JSON, task()),
    "alg none token": (
        "POST",
        "/v1/tasks",
        {"authorization": f"Bearer {UNSIGNED}"} | JSON,
        task(),
    ),
    "subject of 100 KB": ("POST", "/v1/tasks", auth("s" * 100_000, "service") | JSON, task()),
    "reviewer submitting": ("POST", "/v1/tasks", REVIEWER | JSON, task()),
    "cursor 1e999": ("GET", "/v1/reviews?cursor=1e999", REVIEWER, None),
    "cursor not base64": ("GET", "/v1/reviews?cursor=%%%", REVIEWER, None),
    "cursor base64 of garbage": ("GET", f"/v1/reviews?cursor={b64('{nope')}", REVIEWER, None),
    "cursor base64 of a list": ("GET", f"/v1/reviews?cursor={b64('[1,2,3]')}", REVIEWER, None),
    "limit negative": ("GET", "/v1/reviews?limit=-1", REVIEWER, None),
    "limit huge": ("GET", "/v1/reviews?limit=1000000000000000000000", REVIEWER, None),
    "status unknown": ("GET", "/v1/reviews?status=everything", REVIEWER, None),
    "due_before not a time": ("GET", "/v1/reviews?due_before=tomorrow", REVIEWER, None),
    "priority_min text": ("GET", "/v1/reviews?priority_min=high", REVIEWER, None),
    "stats since after until": (
        "GET",
        "/v1/stats?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        ADMIN,
        None,
    ),
    "stats over a year": (
        "GET",
        "/v1/stats?since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        ADMIN,
        None,
    ),
    "stats group unknown": ("GET", "/v1/stats?group_by=everything", ADMIN, None),
    "stats since year 0": ("GET", "/v1/stats?since=0000-01-01T00:00:00Z", ADMIN, None),
    "review id with slashes": ("GET", "/v1/reviews/..%2F..%2Fetc%2Fpasswd", REVIEWER, None),
    "review id of 10,000 characters": ("GET", "/v1/reviews/" + "x" * 10_000, REVIEWER, None),
    "claim of no review": ("POST", "/v1/reviews/no-such/claim", REVIEWER, None),
    "decision without a claim": (
        "POST",
        "/v1/reviews/no-such/decision",
        REVIEWER | JSON,
        b'{"outcome":"x","rationale":"y"}',
    ),
    "decision body empty object": ("POST", "/v1/reviews/no-such/decision", REVIEWER | JSON, b"{}"),
    "decision rationale of 1 MB": (
        "POST",
        "/v1/reviews/no-such/decision",
        REVIEWER | JSON,
        json.dumps({"outcome": "x", "rationale": "r" * 900_000}).encode(),
    ),
    "escalation reason missing": ("POST", "/v1/reviews/no-such/escalate", REVIEWER | JSON, b"{}"),
    "task id with a NUL": ("GET", "/v1/tasks/a%00b", ADMIN, None),
    "unknown route": ("GET", "/v1/everything", ADMIN, None),
    "method not allowed": ("DELETE", "/v1/tasks/ok-1", ADMIN, None),
    "policy apply not YAML": (
        "POST",
        "/v1/admin/policy/apply",
        ADMIN | JSON,
        b'{"document": "::: not yaml :::"}',
    ),
    "policy apply a billion laughs": (
        "POST",
        "/v1/admin/policy/apply",
        ADMIN | JSON,
        json.dumps({"document": LAUGHS}).encode(),
    ),
}


async def stored(app: FastAPI) -> tuple[int, int]:
    async with app.state.store.transaction() as s:
        counted = [
            (await s.execute(select(func.count()).select_from(t))).scalar_one()
            for t in (tasks, reviews)
        ]
    return counted[0], counted[1]


async def test_hostile_requests_get_a_4xx_with_a_message_and_store_nothing(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    assert len(CORPUS) >= 50
    async with review_api(kafka_settings, database_url) as (client, app):
        before = await stored(app)
        answers: dict[str, tuple[int, str]] = {}
        for kind, (method, path, headers, body) in CORPUS.items():
            response = await client.request(method, path, headers=headers, content=body)
            try:
                detail = response.json().get("detail")
            except (ValueError, AttributeError):
                detail = None
            answers[kind] = (response.status_code, str(detail)[:80] if detail else "")
        wrong = {k: a for k, a in answers.items() if not (400 <= a[0] < 500 and a[1])}
        assert wrong == {}, " | ".join(f"{k}: {v}" for k, v in sorted(wrong.items()))
        assert await stored(app) == before
        # The same API still takes a good request.
        good = await client.post("/v1/tasks", content=task(), headers=SERVICE | JSON)
        assert good.status_code == 202, good.text
