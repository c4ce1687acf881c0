"""Request bodies are bounded before anything reads them: 413 over the size limit, 400 for JSON
nested too deep, whoever sends them and however (with a length or chunked); nothing stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.review_api.test_api import auth

pytestmark = pytest.mark.kafka
MIB = 1_048_576
JSON = {"content-type": "application/json"}


def task(task_id: str, padding: int = 0) -> dict[str, object]:
    return {
        "task_id": task_id,
        "task_type": "tumor_screening",
        "features": {"mean_radius": 14.2},
        "context": {"note": "x" * padding},
    }


async def test_a_large_or_deep_body_is_refused_before_authentication(
    api: httpx.AsyncClient,
) -> None:
    service = auth("s", "service")
    huge = json.dumps(task("big", padding=2 * MIB)).encode()
    refused = await api.post("/v1/tasks", content=huge, headers=JSON)
    assert refused.status_code == 413  # not 401: nothing past the limit ran
    assert refused.json()["detail"] == f"the request body is larger than {MIB} bytes"

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it comes
        for _ in range(40):
            yield b" " * 65_536

    chunked = await api.post("/v1/tasks", content=chunks(), headers=service)
    assert chunked.status_code == 413

    says_huge = {"content-length": "9" * 11, **service}
    lying = await api.post("/v1/tasks", content=b"{}", headers=says_huge)
    assert lying.status_code == 413

    deep = {"task_id": "deep", "task_type": "t", "features": {}, "context": {}}
    node: dict[str, object] = deep["context"]  # type: ignore[assignment]
    for _ in range(40):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    nested = await api.post("/v1/tasks", json=deep, headers=service)
    assert nested.status_code == 400
    assert nested.json()["detail"] == "the JSON body nests deeper than 32 levels"

    # Under both limits the same request goes through.
    accepted = await api.post("/v1/tasks", json=task("fits", 1000), headers=service)
    assert accepted.status_code == 202, accepted.text
    for refused_id in ("big", "deep"):
        assert (
            await api.get(f"/v1/tasks/{refused_id}", headers=auth("a", "auditor"))
        ).status_code == 404
