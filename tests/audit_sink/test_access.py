"""Every endpoint of the audit API is for auditors only, but for asking for a verification,
which admins may do too: without a token 401, other roles 403."""

from __future__ import annotations

import httpx
import pytest
from tandem_audit_sink.app import create_app
from tandem_audit_sink.settings import AuditSettings

from tests.audit_sink.harness import bearer

# Values for the parameters an endpoint requires, so that only the role decides the answer.
PARAMS = {"event_id": "e-1", "first": "1", "second": "2"}
ROLES = ("reviewer", "senior", "admin", "auditor", "service")
# Asking for a verification reveals nothing; its result is for auditors.
ALSO_ADMINS = {("POST", "/v1/audit/verify")}


def audit_operations() -> list[tuple[str, str]]:
    document = create_app(AuditSettings()).openapi()
    return [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        if path.startswith("/v1/audit")
        for method in operations
    ]


def test_the_audit_api_has_the_endpoints_this_test_covers() -> None:
    assert len(audit_operations()) == 11


@pytest.mark.parametrize(("method", "path"), audit_operations())
async def test_only_auditors_get_in(method: str, path: str) -> None:
    app = create_app(AuditSettings())  # the lifespan is not run: nothing reaches the database
    transport = httpx.ASGITransport(app=app)
    url = path.replace("{task_id}", "t-1")
    allowed = {"auditor", "admin"} if (method, path) in ALSO_ADMINS else {"auditor"}
    async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
        assert (await client.request(method, url, params=PARAMS)).status_code == 401
        for role in set(ROLES) - allowed:
            answer = await client.request(method, url, params=PARAMS, headers=bearer(role))
            assert answer.status_code == 403, (role, answer.text)
