"""The ledger in SQLite and PostgreSQL: appends, checkpoints, proofs, dedupe, append-only,
tampering, roles, races."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry
from sqlalchemy import TextClause, column, table, text
from sqlalchemy.exc import DBAPIError
from tandem_audit_sink.api import ConsistencyProofOut, InclusionProofOut
from tandem_audit_sink.auditor import check_consistency, check_inclusion
from tandem_audit_sink.consumer import AuditHandler, capture
from tandem_audit_sink.ledger import (
    AuditRecord,
    canonical_json,
    document_content_hash,
    entry_leaf,
    seal,
)
from tandem_audit_sink.merkle import ProofError, root_of
from tandem_audit_sink.privacy import Redactor
from tandem_audit_sink.shards import ShardedLedger, ShardedProof
from tandem_audit_sink.store import MIGRATIONS, Ledger, LedgerError, migrate
from tandem_audit_sink.telemetry import AuditMetrics
from tandem_cli.stack.process import free_port
from tandem_shared.db import create_engine, is_sqlite, upgrade
from tandem_shared.envelope import utcnow
from tandem_shared.kafka import Outgoing, TransientError

from tests.audit_sink.conftest import CHECKPOINT_EVERY, SIGNER, incoming, record
from tests.kafka_utils import ce_headers


async def test_append_signs_checkpoints_and_verifies(ledger: Ledger) -> None:
    first = await ledger.append([record(n) for n in range(1, 4)])
    second = await ledger.append([record(n) for n in range(4, 6)])
    assert [e.seq for e in first.appended + second.appended] == [1, 2, 3, 4, 5]
    assert (first.tree_size, second.tree_size) == (3, 5)
    assert first.checkpoint is None  # 3 < CHECKPOINT_EVERY
    assert second.checkpoint is not None
    assert second.checkpoint.tree_size == 5
    second.checkpoint.check([SIGNER.public_key])
    leaves = [bytes.fromhex(e.leaf_hash) for e in first.appended + second.appended]
    assert second.checkpoint.root_hash == root_of(leaves).hex()
    assert await ledger.checkpoint() is None  # nothing new since
    await ledger.append([record(6)])
    on_time = await ledger.checkpoint()
    assert on_time is not None
    assert on_time.tree_size == 6
    assert [c.tree_size for c in await ledger.checkpoints()] == [5, 6]
    result = await ledger.verify(chunk_size=2, trusted_keys=[SIGNER.public_key])
    assert result.ok, result.failure
    assert (result.entries, result.checkpoints) == (6, 2)


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


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger SET subject = 'mallory' WHERE seq = 2",
        "DELETE FROM ledger WHERE seq = 3",
        "UPDATE ledger_checkpoint SET root_hash = 'x'",
        "DELETE FROM ledger_checkpoint",
        "UPDATE ledger_block SET hash = 'x'",
        "DELETE FROM ledger_block",
    ],
)
async def test_the_ledger_refuses_update_and_delete(ledger: Ledger, statement: str) -> None:
    await ledger.append([record(n) for n in range(1, 300)])
    with pytest.raises(DBAPIError, match="append-only"):
        async with ledger.engine.begin() as conn:
            await conn.execute(text(statement))
    assert (await ledger.verify()).ok


async def test_postgres_refuses_truncate_even_to_the_owner(pg_database: Callable[[], str]) -> None:
    """TRUNCATE fires no row trigger: a statement trigger refuses it. What the service's own
    login may do is shown in test_roles.py."""
    url = pg_database()
    await migrate(url)
    owner = create_engine(url)
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            async with owner.begin() as conn:
                await conn.execute(text("TRUNCATE ledger"))
    finally:
        await owner.dispose()


async def _bypassing_the_triggers(ledger: Ledger, statement: str | TextClause) -> None:
    """Tamper the way someone with owner access to the database could."""
    async with ledger.engine.begin() as conn:
        for table in ("ledger", "ledger_block", "ledger_checkpoint"):
            if is_sqlite(str(ledger.engine.url)):
                await conn.execute(text(f"DROP TRIGGER {table}_no_update"))
                await conn.execute(text(f"DROP TRIGGER {table}_no_delete"))
            else:
                await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_update"))
        if not is_sqlite(str(ledger.engine.url)):
            # Since retention, DELETE on the ledger has a guard of its own (audit_0005).
            await conn.execute(text("ALTER TABLE ledger DISABLE TRIGGER ledger_no_delete"))
        await conn.execute(text(statement) if isinstance(statement, str) else statement)


# the colons are escaped for SQLAlchemy's text()
_AMOUNT_4 = "replace(canonical, '\"amount\"\\:4', '\"amount\"\\:400')"


@pytest.mark.parametrize(
    ("statement", "seq", "reason"),
    [
        ("UPDATE ledger SET subject = 'mallory' WHERE seq = 3", 3, "entry mismatch"),
        (f"UPDATE ledger SET canonical = {_AMOUNT_4} WHERE seq = 4", 4, "leaf mismatch"),
        ("DELETE FROM ledger WHERE seq = 2", 2, "gap in seq"),
        ("DELETE FROM ledger WHERE seq >= 5", 5, "ledger truncated"),
        (
            "UPDATE ledger_checkpoint SET root_hash = leaf_hash FROM ledger WHERE seq = 1",
            6,
            "checkpoint at size 6 has a signature that does not hold",
        ),
    ],
    ids=["column", "entry", "deleted-row", "cut-tail", "checkpoint"],
)
async def test_tampering_fails_verification_at_that_row(
    ledger: Ledger, statement: str, seq: int, reason: str
) -> None:
    await ledger.append([record(n) for n in range(1, 7)])  # a checkpoint at 6
    await ledger.append([record(n) for n in range(7, 9)])  # none yet at 8
    await _bypassing_the_triggers(ledger, statement)
    result = await ledger.verify(chunk_size=2)
    assert not result.ok
    assert result.failure is not None
    assert result.failure.seq == seq
    assert result.failure.reason.startswith(reason)


async def test_a_rewritten_entry_with_its_hash_is_caught_by_the_signed_root(ledger: Ledger) -> None:
    await ledger.append([record(n) for n in range(1, 7)])
    [row] = await ledger.task_events("task-3")
    doc = json.loads(row.canonical)
    doc["data"]["features"]["amount"] = 3000
    canonical = canonical_json(doc)
    # the strongest forger rewrites the content hash too: only the signed root tells
    rewrite = text(
        "UPDATE ledger SET canonical = :c, leaf_hash = :h, content_hash = :d WHERE seq = 3"
    )
    await _bypassing_the_triggers(
        ledger,
        rewrite.bindparams(
            c=canonical, h=entry_leaf(canonical).hex(), d=document_content_hash(doc)
        ),
    )
    result = await ledger.verify()
    assert result.failure is not None
    assert result.failure.seq == 1
    assert "root mismatch: entries 1 to 6" in result.failure.reason


async def test_proofs_from_the_database_hold_offline(ledger: Ledger) -> None:
    """Past two whole blocks, so proofs use stored block hashes and edge leaves only."""
    ledger.checkpoint_every = 10_000
    appended = []
    for start in range(1, 700, 100):
        appended += (await ledger.append([record(n) for n in range(start, start + 100)])).appended
        await ledger.checkpoint()
    sizes = [c.tree_size for c in await ledger.checkpoints()]
    assert sizes == [100, 200, 300, 400, 500, 600, 700]
    latest = await ledger.latest_checkpoint()
    assert latest is not None
    assert latest.root_hash == root_of(bytes.fromhex(e.leaf_hash) for e in appended).hex()
    for n in (1, 256, 257, 513, 700):
        proof = InclusionProofOut.of(ShardedProof(await ledger.prove_inclusion(f"event-{n}"), None))
        entry = check_inclusion(proof.model_dump(mode="json"), latest, record(n).data)
        assert entry["seq"] == n
    older = await ledger.checkpoint_at(300)
    old_proof = InclusionProofOut.of(
        ShardedProof(await ledger.prove_inclusion("event-3", tree_size=300), None)
    )
    check_inclusion(old_proof.model_dump(mode="json"), older)
    with pytest.raises(ProofError, match="other data"):
        check_inclusion(old_proof.model_dump(mode="json"), older, {"task_id": "forged"})
    await ledger.append([record(701)])
    with pytest.raises(LedgerError, match="not yet covered"):
        await ledger.prove_inclusion("event-701")
    for first, second in [(100, 700), (300, 500), (200, 200)]:
        proof_doc = ConsistencyProofOut.of(await ledger.prove_consistency(first, second))
        newer = check_consistency(
            proof_doc.model_dump(mode="json"),
            await ledger.checkpoint_at(first),
            [SIGNER.public_key],
        )
        assert newer.tree_size == second


async def test_a_new_writer_continues_the_same_tree(database_url: str, ledger: Ledger) -> None:
    await ledger.append([record(n) for n in range(1, 300)])
    restarted = Ledger(create_engine(database_url), SIGNER, CHECKPOINT_EVERY)
    try:
        await restarted.append([record(n) for n in range(300, 600)])
        await ledger.append([record(n) for n in range(600, 610)])  # its edge is stale now
    finally:
        await restarted.engine.dispose()
    result = await ledger.verify(chunk_size=100)
    assert result.ok, result.failure
    assert result.entries == 609
    assert result.checkpoints == 3


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


async def test_the_handler_appends_a_batch_and_outputs_its_checkpoint(ledger: Ledger) -> None:
    registry = CollectorRegistry()
    handler = AuditHandler(ShardedLedger([ledger]), AuditMetrics(registry), "checkpoints")
    results = await handler([incoming(record(n)) for n in (1, 2, 2)])
    assert results == [[], [], []]
    labels = {"topic": "tandem.tasks.submitted"}
    assert registry.get_sample_value("tandem_audit_entries_total", labels) == 2
    assert registry.get_sample_value("tandem_audit_duplicates_total", labels) == 1
    assert registry.get_sample_value("tandem_audit_tree_size") == 2
    results = await handler([incoming(record(n)) for n in (3, 4)])
    assert results[0] == []
    [published] = results[1]
    assert isinstance(published, Outgoing)
    assert published.topic == "checkpoints"
    assert published.event.data.tree_size == 4
    assert registry.get_sample_value("tandem_audit_checkpoint_tree_size") == 4


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_an_unreachable_database_is_a_transient_error(kind: str, tmp_path: Path) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path}"  # a directory: cannot be opened as a database
        if kind == "sqlite"
        else f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    )
    engine = create_engine(url)
    handler = AuditHandler(
        ShardedLedger([Ledger(engine)]), AuditMetrics(CollectorRegistry()), "checkpoints"
    )
    try:
        with pytest.raises(TransientError, match="unavailable"):
            await handler([incoming(record(1))])
    finally:
        await engine.dispose()


# what later migrations added to the ledger
NEWER_COLUMNS = ("task_type", "content_hash", "conflict_of")


async def test_a_hash_chained_ledger_migrates_into_the_merkle_tree(database_url: str) -> None:
    """Entries written before the Merkle tree keep their leaves; blocks and task types are
    filled in, and the ledger verifies and grows on."""
    await upgrade(database_url, MIGRATIONS, "audit_0001")
    old = [seal(record(n, data={"task_type": "loan"}), n, utcnow()) for n in range(1, 301)]
    engine = create_engine(database_url)
    try:
        rows = [
            {k: v for k, v in e.columns().items() if k not in NEWER_COLUMNS}
            | {"canonical": e.canonical, "leaf_hash": e.leaf_hash, "chain_hash": "0" * 64}
            for e in old
        ]
        old_shape = table("ledger", *(column(name) for name in rows[0]))
        async with engine.begin() as conn:
            await conn.execute(old_shape.insert(), rows)
        await migrate(database_url)
        migrated = Ledger(engine, SIGNER, CHECKPOINT_EVERY)
        await migrated.append([record(n) for n in range(301, 305)])
        result = await migrated.verify()
        assert result.ok, result.failure
        assert (result.entries, result.checkpoints) == (304, 1)
        assert (await migrated.task_events("task-7"))[0].task_type == "loan"
        assert len(await migrated.blocks()) == 1
    finally:
        await engine.dispose()


async def test_private_fields_never_reach_the_database_and_the_ledger_verifies(
    ledger: Ledger,
) -> None:
    redact = Redactor(["ssn"], b"privacy-key")
    body = {"task_id": "t-1", "task_type": "loan", "features": {"ssn": "123-45-6789", "x": 1}}
    headers = ce_headers("tandem.task.submitted.v1", "t-1", "id-1")
    kafka_record = ConsumerRecord(
        "tandem.tasks.submitted", 0, 0, 0, 0, b"t-1", json.dumps(body).encode(), None, 0, 0,
        headers,
    )  # fmt: skip
    await ledger.append([capture(kafka_record, redact), record(2), record(3), record(4)])
    async with ledger.engine.connect() as conn:
        dumped = "".join(str(row) for row in await conn.execute(text("SELECT * FROM ledger")))
    assert "123-45-6789" not in dumped
    assert redact.hashed("123-45-6789") in dumped
    result = await ledger.verify(trusted_keys=[SIGNER.public_key])
    assert result.ok, result.failure
    assert result.checkpoints == 1
