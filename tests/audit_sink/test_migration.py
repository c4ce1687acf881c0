"""A ledger made by the previous head (unique on the event id) upgrades in place, on each
database: nothing in it changes, it verifies against its old checkpoint, it stays append-only,
and from then on deduplicates on (source, id) and keeps conflicts."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, column, inspect, table, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from tandem_audit_sink.ledger import seal
from tandem_audit_sink.merkle import Frontier
from tandem_audit_sink.store import MIGRATIONS, Ledger, migrate
from tandem_shared.db import create_engine, upgrade
from tandem_shared.envelope import utcnow

from tests.audit_sink.conftest import CHECKPOINT_EVERY, SIGNER, record

PREVIOUS_HEAD = "audit_0002"
OLD = 300  # past one whole block


async def test_a_ledger_of_the_previous_head_upgrades_and_dedupes_on_source_and_id(
    database_url: str,
) -> None:
    await upgrade(database_url, MIGRATIONS, PREVIOUS_HEAD)
    # The ledger as the previous code wrote it: entries, their block, a signed checkpoint.
    recorded = utcnow()
    old = [seal(record(n), n, recorded) for n in range(1, OLD + 1)]
    frontier, blocks = Frontier(), []
    for entry in old:
        done = frontier.push(bytes.fromhex(entry.leaf_hash))
        if done is not None:
            blocks.append({"block": done[0], "hash": done[1].hex()})
    checkpoint = SIGNER.sign(OLD, frontier.root().hex(), recorded)
    rows = [
        {k: v for k, v in e.columns().items() if k not in ("content_hash", "conflict_of")}
        | {"canonical": e.canonical, "leaf_hash": e.leaf_hash}
        for e in old
    ]
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(table("ledger", *(column(name) for name in rows[0])).insert(), rows)
            await conn.execute(
                table("ledger_block", column("block"), column("hash")).insert(), blocks
            )
            await conn.execute(
                text(
                    "INSERT INTO ledger_checkpoint VALUES "
                    "(:tree_size, :root_hash, :issued_at, :origin, :public_key, :signature)"
                ),
                checkpoint.__dict__,
            )
        async with engine.connect() as conn:
            before = (await conn.execute(text("SELECT * FROM ledger ORDER BY seq"))).all()

        await migrate(database_url)
        await engine.dispose()  # PostgreSQL: statements prepared on the old shape are stale

        async with engine.connect() as conn:
            after = (await conn.execute(text("SELECT * FROM ledger ORDER BY seq"))).all()
            indexes = await conn.run_sync(_index_names)
        assert [tuple(r)[: len(before[0])] for r in after] == [tuple(r) for r in before]
        assert {"ix_ledger_subject_seq", "ix_ledger_recorded_at"} <= indexes
        assert {"uq_ledger_event_id_source", "ix_ledger_conflict_of"} <= indexes
        ledger = Ledger(engine, SIGNER, CHECKPOINT_EVERY)
        assert (await ledger.verify(trusted_keys=[SIGNER.public_key])).checkpoints == 1

        result = await ledger.append(
            [
                record(5),  # an old entry again: a duplicate (its hash comes from its entry)
                record(6, data={"task_id": "task-6", "changed": True}),  # a conflict with seq 6
                record(7, source="tests/elsewhere"),  # the same id from another source
                record(OLD + 1),
            ]
        )
        assert [r.event_id for r in result.duplicates] == ["event-5"]
        assert [(e.event_id, e.conflict_of) for e in result.appended] == [
            ("event-6", 6),
            ("event-7", None),
            (f"event-{OLD + 1}", None),
        ]
        await ledger.checkpoint()
        verified = await ledger.verify(trusted_keys=[SIGNER.public_key])
        assert verified.ok, verified.failure
        assert (verified.entries, verified.checkpoints) == (OLD + 3, 2)

        # The new unique key holds, and the ledger is still append-only.
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(
                    table("ledger", *(column(name) for name in rows[0])).insert(),
                    [rows[0] | {"seq": OLD + 10}],
                )
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE ledger SET subject = 'x' WHERE seq = 1"))
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM ledger WHERE seq = 1"))
    finally:
        await engine.dispose()


def _index_names(conn: Connection) -> set[str]:
    return {str(index["name"]) for index in inspect(conn).get_indexes("ledger")}
