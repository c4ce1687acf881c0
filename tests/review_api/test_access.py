"""Who may call what: every endpoint of the review API against every role, and no token."""

from __future__ import annotations

import httpx
import pytest
from tandem_shared.auth import ROLES

from tests.review_api.test_api import auth

pytestmark = pytest.mark.kafka

READERS = {"reviewer", "senior", "admin"}  # senior and admin imply reviewer
QUEUE_READERS = READERS | {"auditor"}  # each sees what is theirs to see (test_visibility.py)
ADMINS = {"admin"}
# The roles each endpoint admits; a new endpoint must be added here or the test fails.
ACCESS: dict[tuple[str, str], set[str]] = {
    ("GET", "/v1/reviews"): QUEUE_READERS,
    ("GET", "/v1/reviews/{review_id}"): QUEUE_READERS,
    # Then the audit API's own roles decide, with the caller's token (test_history.py).
    ("GET", "/v1/reviews/{review_id}/history"): QUEUE_READERS,
    ("GET", "/v1/reviews/events"): QUEUE_READERS,
    ("POST", "/v1/reviews/next"): READERS,
    ("POST", "/v1/reviews/{review_id}/claim"): READERS,
    ("POST", "/v1/reviews/{review_id}/heartbeat"): READERS,
    ("POST", "/v1/reviews/{review_id}/escalate"): READERS,
    ("POST", "/v1/reviews/{review_id}/release"): READERS,
    ("POST", "/v1/reviews/{review_id}/decision"): READERS,
    ("POST", "/v1/reviews/{review_id}/first-look"): READERS,
    ("POST", "/v1/reviews/{review_id}/flags"): READERS,
    ("GET", "/v1/flags"): {"senior", "admin", "auditor"},
    ("GET", "/v1/me/today"): READERS,
    ("GET", "/v1/tasks/{task_id}"): READERS | {"auditor", "service"},
    ("POST", "/v1/tasks"): {"service", "admin"},
    ("GET", "/v1/stats"): {"senior", "admin", "auditor"},
    ("GET", "/v1/admin/models/{name}"): ADMINS,
    ("POST", "/v1/admin/models/{name}/promote"): ADMINS,
    ("POST", "/v1/admin/models/{name}/rollback"): ADMINS,
    ("POST", "/v1/admin/models/{name}/shadow"): ADMINS,
    ("GET", "/v1/admin/policy"): ADMINS | {"auditor"},
    ("POST", "/v1/admin/policy/validate"): ADMINS,
    ("POST", "/v1/admin/policy/simulate"): ADMINS,
    ("POST", "/v1/admin/policy/apply"): ADMINS,
    ("POST", "/v1/admin/policy/rollback"): ADMINS,
    ("GET", "/v1/admin/policy/history"): ADMINS | {"auditor"},
    ("POST", "/v1/admin/kill-switch"): ADMINS,
    # A senior writes only the risks they own (test_risks.py); an auditor reads them.
    ("GET", "/v1/risks"): {"senior", "admin", "auditor"},
    ("GET", "/v1/risks/{risk_id}/history"): {"senior", "admin", "auditor"},
    ("PUT", "/v1/risks/{risk_id}"): {"senior", "admin"},
    ("GET", "/v1/incidents"): {"senior", "admin", "auditor"},
    ("GET", "/v1/incidents/{incident_id}"): {"senior", "admin", "auditor"},
    ("POST", "/v1/incidents/open"): {"senior", "admin"},
    ("POST", "/v1/incidents/{incident_id}/timeline"): {"senior", "admin"},
    ("POST", "/v1/alerts"): {"service", "admin"},  # Alertmanager's webhook
}
# Streams never end: admitted roles are shown by test_live.py, refusals here.
STREAMS = {("GET", "/v1/reviews/events")}


async def test_every_endpoint_admits_exactly_its_roles(admin_api: httpx.AsyncClient) -> None:
    paths = (await admin_api.get("/openapi.json")).json()["paths"]
    routes = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/")
        for method in operations
    }
    assert routes == set(ACCESS), "an endpoint without an entry in ACCESS, or one that is gone"
    for (method, path), allowed in sorted(ACCESS.items()):
        # Concrete values; an invalid body is refused only after the role was checked.
        url = path.format(
            review_id="none", task_id="none", name="none", risk_id="none", incident_id="none"
        )
        anonymous = await admin_api.request(method, url)
        assert anonymous.status_code == 401, (method, path)
        for role in ROLES:
            if role in allowed and (method, path) in STREAMS:
                continue
            response = await admin_api.request(method, url, headers=auth("x", role))
            if role in allowed:
                assert response.status_code not in (401, 403), (method, path, role)
            else:
                assert response.status_code == 403, (method, path, role, response.text)
