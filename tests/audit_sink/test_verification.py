"""Verification in the background: asked for over HTTP (auditors and admins), read back by
auditors, one at a time; a tampered entry shows in the result of the verification asked for
after it, never in a read of an older one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from tandem_audit_sink.app import create_app
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.store import Ledger, migrate
from tandem_audit_sink.verification import Verifications
from tandem_cli.audit_client import VerificationTimeout, verify_now
from tandem_shared.db import is_sqlite

from tests.audit_sink.conftest import record
from tests.audit_sink.harness import bearer
from tests.service_utils import eventually

VERIFY = "/v1/audit/verify"
AUDITOR = bearer("auditor")


@pytest.fixture
async def audit_app(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The audit API on a migrated ledger, without Kafka (no lifespan: no consumer, no timer)."""
    await migrate(database_url)
    app = create_app(AuditSettings(database_url=database_url))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
            yield client, app
    finally:
        await app.state.verifications.close()
        await app.state.ledger.shards[0].engine.dispose()


async def tamper(ledger: Ledger, statement: str) -> None:
    """Change an entry the way someone with owner rights could, past the append-only guard."""
    async with ledger.engine.begin() as conn:
        if is_sqlite(str(ledger.engine.url)):
            await conn.execute(text("DROP TRIGGER ledger_no_update"))
        else:
            await conn.execute(text("ALTER TABLE ledger DISABLE TRIGGER ledger_no_update"))
        await conn.execute(text(statement))


async def test_a_verification_asked_for_after_tampering_names_the_entry(
    audit_app: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = audit_app
    ledger: Ledger = app.state.ledger.shards[0]
    none_yet = await client.get(VERIFY, headers=AUDITOR)
    assert none_yet.status_code == 503
    assert none_yet.headers["Retry-After"] == "300"  # the timer's period
    assert "ask for one with POST /v1/audit/verify" in none_yet.json()["detail"]

    await ledger.append([record(n) for n in range(1, 6)])
    await ledger.checkpoint()
    good = await verify_now(client, AUDITOR, within=30, poll=0.05)
    assert (good["ok"], good["whole"], good["requested"]) == (True, True, True)
    assert (good["entries"], good["tree_size"], good["checkpoints_checked"]) == (5, 5, 1)
    assert good["from_tree_size"] == 0 and good["seconds"] >= 0
    assert datetime.fromisoformat(good["finished_at"]) >= datetime.fromisoformat(good["started_at"])

    await tamper(ledger, "UPDATE ledger SET source = 'forged' WHERE seq = 2")
    # A read returns the result as it was: nothing is recomputed for a reader.
    assert (await client.get(VERIFY, headers=AUDITOR)).json()["ok"] is True
    asked = await client.post(VERIFY, headers=bearer("admin"))
    assert asked.status_code == 202, asked.text
    assert asked.headers["Location"] == asked.json()["result"] == f"{VERIFY}?whole=true"
    bad = await verify_now(client, AUDITOR, within=30, poll=0.05)
    assert (bad["ok"], bad["failed_seq"]) == (False, 2)
    assert bad["reason"].startswith("entry mismatch")
    assert datetime.fromisoformat(bad["started_at"]) >= datetime.fromisoformat(
        asked.json()["requested_at"]
    )
    failures = app.state.runtime.registry.get_sample_value("tandem_audit_verify_failures_total")
    assert failures in (1.0, 2.0)  # the admin's ask and the auditor's: one run, or two
    # Admins may ask, not read; others may do neither.
    assert (await client.get(VERIFY, headers=bearer("admin"))).status_code == 403
    assert (await client.post(VERIFY, headers=bearer("reviewer"))).status_code == 403


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI, Gate]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await migrate(url)
    app = create_app(AuditSettings(database_url=url, verify_whole_every=2))
    ledger: Ledger = app.state.ledger.shards[0]
    gate = Gate(ledger)
    ledger.verify = gate.verify  # type: ignore[method-assign]
    await ledger.append([record(n) for n in range(1, 4)])
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
            yield client, app, gate
    finally:
        gate.open.set()
        await app.state.verifications.close()
        await ledger.engine.dispose()


class Gate:
    """Holds every verification until opened, and counts how many run at once."""

    def __init__(self, ledger: Ledger) -> None:
        self._verify = ledger.verify
        self.open = asyncio.Event()
        self.running = self.most = self.calls = 0

    async def verify(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.open.wait()
            return await self._verify(*args, **kwargs)
        finally:
            self.running -= 1


async def test_one_verification_runs_at_a_time_and_asks_share_the_one_waiting(
    gated: tuple[httpx.AsyncClient, FastAPI, Gate],
) -> None:
    client, app, gate = gated
    verifications: Verifications = app.state.verifications

    async def asked() -> datetime:
        answer = await client.post(VERIFY, headers=AUDITOR)
        assert answer.status_code == 202
        return datetime.fromisoformat(answer.json()["requested_at"])

    first = await asked()

    async def started() -> bool:
        return verifications.running is not None

    await eventually(started, "the first verification to start")
    second, third = await asked(), await asked()
    assert first < second == third  # one waits behind the one running, shared by both asks
    timer = asyncio.create_task(verifications.on_time())  # the timer's round waits its turn
    status = await client.get(VERIFY, params={"whole": "true"}, headers=AUDITOR)
    assert (status.status_code, status.headers["Retry-After"]) == (503, "2")
    assert "one is under way" in status.json()["detail"]
    await asyncio.sleep(0.1)
    assert (gate.running, gate.calls) == (1, 1)

    gate.open.set()
    await timer

    async def all_done() -> bool:
        whole = verifications.latest_whole
        return whole is not None and whole.started_at >= second and gate.running == 0

    await eventually(all_done, "the verification asked for second")
    assert (gate.most, gate.calls) == (1, 3)  # the first, the shared one, the timer's
    gate.open.clear()  # a verification held past its caller's patience
    with pytest.raises(VerificationTimeout, match="did not finish within 0 s"):
        await verify_now(client, AUDITOR, within=0)


async def test_the_timer_goes_on_from_its_last_good_checkpoint_and_now_and_then_does_all(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await migrate(url)
    app = create_app(AuditSettings(database_url=url, verify_whole_every=2))
    ledger: Ledger = app.state.ledger.shards[0]
    verifications: Verifications = app.state.verifications
    try:
        await ledger.append([record(n) for n in range(1, 4)])
        await ledger.checkpoint()
        await verifications.on_time()  # the first round: everything
        await ledger.append([record(n) for n in range(4, 6)])
        await verifications.on_time()  # what is new since the checkpoint it reached
        latest, whole = verifications.latest, verifications.latest_whole
        assert latest is not None and whole is not None
        assert (latest.whole, latest.requested, latest.from_size) == (False, False, 3)
        assert (latest.result.entries, latest.result.tree_size, latest.result.ok) == (2, 5, True)
        assert (whole.result.entries, whole.from_size) == (3, 0)
        await verifications.on_time()
        assert verifications.latest_whole is not None
        assert verifications.latest_whole.result.entries == 5
    finally:
        await ledger.engine.dispose()
