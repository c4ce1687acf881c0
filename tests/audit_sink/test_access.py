"""Every endpoint of the audit API is for auditors only: without a token 401, other roles 403."""

from __future__ import annotations

import httpx
import pytest
from tandem_audit_sink.app import create_app
from tandem_audit_sink.settings import AuditSettings

from tests.audit_sink.harness import bearer

# Values for the parameters an endpoint requires, so that only the role decides the answer.
PARAMS = {"event_id": "e-1", "first": "1", "second": "2"}


def audit_paths() -> list[str]:
    document = create_app(AuditSettings()).openapi()
    return [path for path in document["paths"] if path.startswith("/v1/audit")]


def test_the_audit_api_has_the_endpoints_this_test_covers() -> None:
    assert len(audit_paths()) == 8


@pytest.mark.parametrize("path", audit_paths())
async def test_only_auditors_get_in(path: str) -> None:
    app = create_app(AuditSettings())  # the lifespan is not run: nothing reaches the database
    transport = httpx.ASGITransport(app=app)
    url = path.replace("{task_id}", "t-1")
    async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
        assert (await client.get(url, params=PARAMS)).status_code == 401
        for role in ("reviewer", "senior", "admin", "service"):
            answer = await client.get(url, params=PARAMS, headers=bearer(role))
            assert answer.status_code == 403, (role, answer.text)
