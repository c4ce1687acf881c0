"""The OpenAPI document against the running API: schemathesis generates requests from it and
finds no server error and no response the document does not declare."""

from __future__ import annotations

import asyncio

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.review_api.test_api import auth

pytestmark = pytest.mark.kafka
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# An endless event stream cannot be fetched whole; its responses are checked in test_live.py.
SKIPPED = {"/v1/reviews/events"}


def findings(url: str, examples: int) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    found: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIPPED:
            continue

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=url, headers=auth("root", "admin"), checks=CHECKS, timeout=30
            )

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - every finding is reported, then the test fails
            found.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_generated_requests_find_no_server_error_or_undocumented_response(
    server: str,
) -> None:
    found = await asyncio.to_thread(findings, server, 8)
    assert found == [], "\n\n".join(found)
