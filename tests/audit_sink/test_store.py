"""The ledger in SQLite and PostgreSQL: appends, dedupe, append-only triggers, tampering, races."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from tandem_audit_sink.consumer import AuditHandler
from tandem_audit_sink.ledger import AuditRecord, Head
from tandem_audit_sink.store import Ledger
from tandem_audit_sink.telemetry import AuditMetrics
from tandem_cli.stack.process import free_port
from tandem_shared.db import create_engine, is_sqlite
from tandem_shared.kafka import Incoming, TransientError

from tests.audit_sink.conftest import record


async def test_append_then_verify(ledger: Ledger) -> None:
    first = await ledger.append([record(n) for n in range(1, 4)])
    second = await ledger.append([record(n) for n in range(4, 6)])
    assert [e.seq for e in first.appended + second.appended] == [1, 2, 3, 4, 5]
    assert second.head == Head(5, second.appended[-1].chain_hash)
    assert await ledger.head() == second.head
    result = await ledger.verify(chunk_size=2)
    assert result.ok, result.failure
    assert result.entries == 5
    assert result.head == second.head


async def test_an_empty_ledger_verifies(ledger: Ledger) -> None:
    result = await ledger.verify()
    assert result.ok
    assert result.entries == 0


async def test_duplicates_are_stored_once(ledger: Ledger) -> None:
    first = await ledger.append([record(1), record(2), record(1)])
    assert [e.event_id for e in first.appended] == ["event-1", "event-2"]
    assert [r.event_id for r in first.duplicates] == ["event-1"]
    # a redelivery (same ids, even from another partition) appends only what is new
    again = await ledger.append([record(2, partition=9), record(3)])
    assert [e.event_id for e in again.appended] == ["event-3"]
    assert [r.event_id for r in again.duplicates] == ["event-2"]
    assert (await ledger.verify()).entries == 3
    async with ledger.engine.connect() as conn:
        count = await conn.scalar(text("SELECT count(*) FROM ledger WHERE event_id = 'event-2'"))
    assert count == 1


async def test_lineage_is_a_tasks_events_in_ledger_order(ledger: Ledger) -> None:
    await ledger.append([record(1, task="a"), record(2, task="b"), record(3, task="a")])
    await ledger.append([record(4, task="a")])
    events = await ledger.task_events("a")
    assert [(e.seq, e.event_id) for e in events] == [(1, "event-1"), (3, "event-3"), (4, "event-4")]
    assert all(e.event_time.tzinfo is not None for e in events)
    assert await ledger.task_events("nobody") == []


async def test_the_ledger_refuses_update_and_delete(ledger: Ledger) -> None:
    await ledger.append([record(n) for n in range(1, 4)])
    for statement in (
        "UPDATE ledger SET subject = 'mallory' WHERE seq = 2",
        "DELETE FROM ledger WHERE seq = 3",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with ledger.engine.begin() as conn:
                await conn.execute(text(statement))
    assert (await ledger.verify()).ok


async def _bypassing_the_triggers(ledger: Ledger, statement: str) -> None:
    """Tamper the way someone with direct database access could."""
    async with ledger.engine.begin() as conn:
        if is_sqlite(str(ledger.engine.url)):
            await conn.execute(text("DROP TRIGGER ledger_no_update"))
            await conn.execute(text("DROP TRIGGER ledger_no_delete"))
            await conn.execute(text(statement))
        else:
            await conn.execute(text("ALTER TABLE ledger DISABLE TRIGGER ledger_no_update"))
            await conn.execute(text(statement))
            await conn.execute(text("ALTER TABLE ledger ENABLE TRIGGER ledger_no_update"))


@pytest.mark.parametrize(
    ("statement", "seq", "reason"),
    [
        ("UPDATE ledger SET subject = 'mallory' WHERE seq = 3", 3, "entry mismatch"),
        (
            # the colons are escaped for SQLAlchemy's text()
            "UPDATE ledger SET canonical = replace(canonical, '\"amount\"\\:4', '\"amount\"\\:400')"
            " WHERE seq = 4",
            4,
            "leaf mismatch",
        ),
        ("UPDATE ledger SET chain_hash = leaf_hash WHERE seq = 5", 5, "chain mismatch"),
        ("DELETE FROM ledger WHERE seq = 2", 2, "gap in seq"),
        ("DELETE FROM ledger WHERE seq >= 5", 5, "ledger truncated"),
    ],
    ids=["column", "entry", "chain", "deleted-row", "cut-tail"],
)
async def test_tampering_fails_verification_at_that_row(
    ledger: Ledger, statement: str, seq: int, reason: str
) -> None:
    await ledger.append([record(n) for n in range(1, 7)])
    await _bypassing_the_triggers(ledger, statement)
    result = await ledger.verify(chunk_size=2)
    assert not result.ok
    assert result.failure is not None
    assert result.failure.seq == seq
    assert result.failure.reason.startswith(reason)


async def test_two_appenders_keep_one_chain(database_url: str, ledger: Ledger) -> None:
    """Two replicas (two engines, two connection pools) appending at once, overlapping ids."""
    other = Ledger(create_engine(database_url))

    def batches(writer: str) -> list[list[AuditRecord]]:
        out = []
        for b in range(12):
            own = [record(1000 * b + n, event_id=f"{writer}-{b}-{n}") for n in range(6)]
            shared = [record(b, event_id=f"shared-{b}-{n}") for n in range(2)]
            out.append(own + shared)
        return out

    async def write(target: Ledger, writer: str) -> int:
        appended = 0
        for batch in batches(writer):
            appended += len((await target.append(batch)).appended)
        return appended

    try:
        counts = await asyncio.gather(write(ledger, "a"), write(other, "b"))
    finally:
        await other.engine.dispose()
    expected = 12 * 6 * 2 + 12 * 2
    assert sum(counts) == expected
    result = await ledger.verify(chunk_size=50)
    assert result.ok, result.failure
    assert result.entries == expected
    async with ledger.engine.connect() as conn:
        distinct = await conn.scalar(text("SELECT count(DISTINCT event_id) FROM ledger"))
    assert distinct == expected


def incoming(item: AuditRecord) -> Incoming[AuditRecord]:
    return Incoming(item, item.topic, item.partition, item.offset, item.key, (), 0, b"")


async def test_the_handler_appends_a_batch_and_outputs_nothing(ledger: Ledger) -> None:
    registry = CollectorRegistry()
    handler = AuditHandler(ledger, AuditMetrics(registry))
    results = await handler([incoming(record(n)) for n in (1, 2, 2)])
    assert results == [[], [], []]
    labels = {"topic": "tandem.tasks.submitted"}
    assert registry.get_sample_value("tandem_audit_entries_total", labels) == 2
    assert registry.get_sample_value("tandem_audit_duplicates_total", labels) == 1
    assert registry.get_sample_value("tandem_audit_chain_length") == 2


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_an_unreachable_database_is_a_transient_error(kind: str, tmp_path: Path) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path}"  # a directory: cannot be opened as a database
        if kind == "sqlite"
        else f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    )
    engine = create_engine(url)
    handler = AuditHandler(Ledger(engine), AuditMetrics(CollectorRegistry()))
    try:
        with pytest.raises(TransientError, match="unavailable"):
            await handler([incoming(record(1))])
    finally:
        await engine.dispose()
