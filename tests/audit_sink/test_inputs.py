"""What a request to the audit API carries, read as its document says, on each database: times
are RFC 3339 with their offset, sizes and seqs fit the ledger's columns, ids hold no NUL. And
the answers it names besides: 405 naming both methods of /v1/audit/verify, 503 while the
ledger's database cannot be reached."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tandem_audit_sink.app import create_app
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.store import Ledger, migrate
from tandem_cli.stack.process import free_port

from tests.audit_sink.conftest import record
from tests.audit_sink.harness import bearer

AUDITOR = bearer("auditor")
ENTRIES = 5
# A JSON Schema date-time is RFC 3339 with its offset; pydantic alone would take the others.
TIMES = {
    "2026-06-01T00:00:00": 422,  # no offset: it used to be read as UTC
    "1700000000": 422,  # seconds since the epoch
    "2026-06-01": 422,
    "0001-01-01T00:00:00+05:00": 200,  # before year 1 in UTC: read as 1970 (it was a 500)
    "9999-12-31T23:59:59-12:00": 200,  # after year 9999 in UTC: read as 9999-01-01 (a 500)
}
BEYOND_BIGINT = str(2**63)


@pytest.fixture
async def audit_api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The auditor's API on a ledger of a few entries and a checkpoint (no lifespan: no Kafka)."""
    await migrate(database_url)
    app = create_app(AuditSettings(database_url=database_url))
    ledger: Ledger = app.state.ledger.shards[0]
    await ledger.append([record(n) for n in range(1, ENTRIES + 1)])
    await ledger.checkpoint()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
            yield client
    finally:
        await ledger.engine.dispose()


async def test_times_are_rfc3339_with_their_offset(audit_api: httpx.AsyncClient) -> None:
    params = (
        ("/v1/audit/completeness", "until"),
        ("/v1/audit/export", "since"),
        ("/v1/audit/export", "until"),
    )
    answers = {
        (path, param, value): (
            await audit_api.get(path, params={param: value}, headers=AUDITOR)
        ).status_code
        for path, param in params
        for value in TIMES
    }
    assert answers == {
        (path, param, v): status for path, param in params for v, status in TIMES.items()
    }
    # The whole ledger, every line: the stream used to end where the time overflowed.
    everything = await audit_api.get(
        "/v1/audit/export", params={"since": "0001-01-01T00:00:00+05:00"}, headers=AUDITOR
    )
    assert len(everything.text.splitlines()) == ENTRIES


async def test_sizes_fit_a_bigint_and_ids_hold_no_nul(audit_api: httpx.AsyncClient) -> None:
    refused = [
        ("/v1/audit/checkpoints", {"after": BEYOND_BIGINT}),  # it was a 500
        ("/v1/audit/proofs/inclusion", {"event_id": "event-1", "tree_size": BEYOND_BIGINT}),
        ("/v1/audit/proofs/inclusion", {"event_id": "event-1", "seq": BEYOND_BIGINT}),
        ("/v1/audit/proofs/consistency", {"first": BEYOND_BIGINT, "second": BEYOND_BIGINT}),
        ("/v1/audit/proofs/inclusion", {"event_id": "event\x00-1"}),  # PostgreSQL: a 500
        ("/v1/audit/proofs/inclusion", {"event_id": "event-1", "source": "tests\x00"}),
        ("/v1/audit/export", {"type": "tandem\x00"}),
    ]
    for path, params in refused:
        answer = await audit_api.get(path, params=params, headers=AUDITOR)
        assert answer.status_code == 422, (path, params, answer.text)
    largest = str(2**63 - 1)
    none_after = await audit_api.get(
        "/v1/audit/checkpoints", params={"after": largest}, headers=AUDITOR
    )
    assert (none_after.status_code, none_after.json()) == (200, [])
    no_such = await audit_api.get(
        "/v1/audit/proofs/inclusion",
        params={"event_id": "event-1", "tree_size": largest},
        headers=AUDITOR,
    )
    assert no_such.status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_another_method_on_verify_is_405_naming_both(audit_api: httpx.AsyncClient) -> None:
    for method in ("OPTIONS", "DELETE", "PUT"):
        answer = await audit_api.request(method, "/v1/audit/verify", headers=AUDITOR)
        assert (answer.status_code, answer.headers["allow"]) == (405, "GET, HEAD, POST")


async def test_an_unreachable_database_is_a_503() -> None:
    nowhere = f"postgresql+asyncpg://audit@127.0.0.1:{free_port()}/audit"
    app = create_app(AuditSettings(database_url=nowhere))
    transport = httpx.ASGITransport(app=app)
    reads = [
        "/v1/audit/tasks/t-1",
        "/v1/audit/completeness",
        "/v1/audit/checkpoints",
        "/v1/audit/checkpoints/latest",
        "/v1/audit/proofs/inclusion?event_id=e-1",
        "/v1/audit/proofs/consistency?first=1&second=2",
        "/v1/audit/export",
    ]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
            answers = {
                path: (await client.get(path, headers=AUDITOR)).status_code for path in reads
            }
    finally:
        await app.state.ledger.shards[0].engine.dispose()
    assert answers == dict.fromkeys(reads, 503)
