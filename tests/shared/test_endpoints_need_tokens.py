"""Outside development every HTTP endpoint of every service answers 401 without a token, but
the probes (/healthz, /readyz, /metrics) and the console's static page, which holds no data;
the API's own description is not served."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from tandem_audit_sink.app import create_app as audit_app
from tandem_audit_sink.settings import AuditSettings
from tandem_review_api.app import create_app as review_app
from tandem_review_api.settings import ReviewApiSettings
from tandem_router.app import create_app as router_app
from tandem_router.settings import RouterSettings
from tandem_scoring.app import create_app as scoring_app
from tandem_scoring.settings import ScoringSettings
from tandem_shared.settings import RuntimeSettings
from tandem_shared.signing import public_text

PRODUCTION = RuntimeSettings(
    env="production",
    jwt_secret="s" * 40,  # type: ignore[arg-type]
    control_trusted_keys=public_text(Ed25519PrivateKey.generate()),
)
OPEN = {"/healthz", "/readyz", "/metrics", "/console"}


def apps(tmp: Path) -> dict[str, Callable[[], FastAPI]]:
    def sqlite(name: str) -> str:
        return f"sqlite+aiosqlite:///{tmp / name}.db"

    return {
        "scoring": lambda: scoring_app(ScoringSettings(runtime=PRODUCTION)),
        "router": lambda: router_app(RouterSettings(runtime=PRODUCTION)),
        "review-api": lambda: review_app(
            ReviewApiSettings(
                runtime=PRODUCTION,
                database_url=sqlite("review"),
                decision_signing_key=base64.b64encode(bytes(32)).decode(),  # type: ignore[arg-type]
            )
        ),
        "audit-sink": lambda: audit_app(
            AuditSettings(
                runtime=PRODUCTION,
                database_url=sqlite("audit"),
                signing_key=base64.b64encode(bytes(32)).decode(),  # type: ignore[arg-type]
            )
        ),
    }


@pytest.mark.parametrize("service", ["scoring", "router", "review-api", "audit-sink"])
async def test_every_endpoint_but_the_probes_needs_a_token(service: str, tmp_path: Path) -> None:
    app = apps(tmp_path)[service]()
    # Every route the API describes (the description is made, though not served).
    calls = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in app.openapi()["paths"].items()
        if path not in OPEN
        for method in operations
    ]
    assert calls, "the service has endpoints"
    # Not started: a request that got past authentication would fail on the missing database
    # or broker, not answer 401.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answered = {f"{m} {p}": (await client.request(m, p)).status_code for m, p in calls}
        described = {p: (await client.get(p)).status_code for p in ("/openapi.json", "/docs")}
    assert {call: code for call, code in answered.items() if code != 401} == {}
    assert described == {"/openapi.json": 404, "/docs": 404}
