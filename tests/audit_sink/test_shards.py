"""The ledger in shards, on SQLite and PostgreSQL: a record goes to the shard of its partition,
each shard is a log of its own with its own checkpoints, a signed root ties their heads
together, and proofs, reads and verification work across them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from tandem_audit_sink.checkpoint import Signer
from tandem_audit_sink.merkle import verify_inclusion
from tandem_audit_sink.roots import ShardHead, heads_text, sign_root
from tandem_audit_sink.shards import ShardedLedger
from tandem_audit_sink.store import AmbiguousEvent, LedgerError, migrate
from tandem_audit_sink.tables import ledger_root
from tandem_shared.db import create_engine, is_sqlite
from tandem_shared.envelope import utcnow

from tests.audit_sink.conftest import CHECKPOINT_EVERY, SIGNER, record

SHARDS = 3


@pytest.fixture(params=["sqlite", "postgres"])
async def engines(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[list[AsyncEngine]]:
    """A migrated database per shard, all of one kind."""
    if request.param == "sqlite":
        urls = [f"sqlite+aiosqlite:///{tmp_path / f'shard-{k}.db'}" for k in range(SHARDS)]
    else:
        create: Callable[[], str] = request.getfixturevalue("pg_database")
        urls = [create() for _ in range(SHARDS)]
    made = []
    for url in urls:
        await migrate(url)
        made.append(create_engine(url))
    try:
        yield made
    finally:
        for engine in made:
            await engine.dispose()


def _sharded(engines: list[AsyncEngine], signer: Signer = SIGNER) -> ShardedLedger:
    return ShardedLedger.of(engines, signer, CHECKPOINT_EVERY)


async def test_each_record_goes_to_the_shard_of_its_partition(engines: list[AsyncEngine]) -> None:
    ledger = _sharded(engines)
    done = await ledger.append([record(n) for n in range(1, 31)])  # partition n % 3
    assert len(done.appended) == 30 and not done.duplicates
    assert await ledger.sizes() == [10, 10, 10]
    for k, shard in enumerate(ledger.shards):
        async for page in shard.chunks():
            assert {(e.shard, e.partition) for e in page} == {(k, k)}
            assert [e.seq for e in page] == list(range(1, 11))  # each shard counts its own
    # Again, the same: every copy lands where the first did and is known there.
    again = await ledger.append([record(n) for n in range(1, 31)])
    assert (len(again.appended), len(again.duplicates)) == (0, 30)


async def test_each_shard_signs_under_its_own_origin_and_a_root_names_their_heads(
    engines: list[AsyncEngine],
) -> None:
    ledger = _sharded(engines)
    done = await ledger.append([record(n) for n in range(1, 31)])
    assert done.root is not None
    latest = [await s.latest_checkpoint() for s in ledger.shards]
    assert [c.origin for c in latest if c] == ["tests", "tests/shard-1", "tests/shard-2"]
    root = await ledger.latest_root()
    assert root is not None and root.origin == "tests"
    root.check([SIGNER.public_key])
    assert [h.shard for h in root.heads] == [0, 1, 2]
    for head, checkpoint in zip(root.heads, latest, strict=True):
        assert checkpoint is not None and head.names(checkpoint)


async def test_an_entry_proves_its_way_from_its_shard_to_the_root(
    engines: list[AsyncEngine],
) -> None:
    ledger = _sharded(engines)
    await ledger.append([record(n) for n in range(1, 31)])
    await ledger.append([record(n) for n in range(31, 34)])  # too few for a checkpoint
    made, root = await ledger.checkpoint()  # the shards' tails, and a root over them
    assert len(made) == 3 and root is not None
    found = await ledger.prove_inclusion("event-32")  # partition 2
    assert found.root is not None and found.root.digest == root.digest
    proof = found.proof
    assert proof.entry.shard == 2 and proof.checkpoint.origin == "tests/shard-2"
    head = found.root.head(2)
    assert head is not None and head.names(proof.checkpoint)
    verify_inclusion(
        proof.entry.seq - 1,
        proof.checkpoint.tree_size,
        bytes.fromhex(proof.entry.leaf_hash),
        [bytes.fromhex(p) for p in proof.path],
        bytes.fromhex(proof.checkpoint.root_hash),
    )
    proof.checkpoint.check([SIGNER.public_key])
    found.root.check([SIGNER.public_key])


async def test_an_entry_no_root_covers_yet_has_no_proof(engines: list[AsyncEngine]) -> None:
    ledger = _sharded(engines)
    await ledger.append([record(n) for n in range(1, 4)])  # a record a shard: no checkpoint
    with pytest.raises(LedgerError, match="not yet covered by a signed root"):
        await ledger.prove_inclusion("event-2")


async def test_an_id_in_two_shards_is_ambiguous_until_the_shard_is_named(
    engines: list[AsyncEngine],
) -> None:
    """A copy sent under another key after the partitions changed lands in another shard."""
    ledger = _sharded(engines)
    await ledger.append([record(n) for n in range(1, 31)])
    await ledger.append([replace(record(3), partition=1)])
    await ledger.checkpoint()
    with pytest.raises(AmbiguousEvent, match="event-3"):
        await ledger.prove_inclusion("event-3")
    assert (await ledger.prove_inclusion("event-3", shard=1)).proof.entry.shard == 1
    assert [e.shard for e in await ledger.task_events("task-3")] == [0, 1]


async def test_reads_see_every_shard(engines: list[AsyncEngine]) -> None:
    ledger = _sharded(engines)
    # One task's records on three partitions (as if its topics had different counts).
    await ledger.append(
        [record(n, task="task-x", event_type=t, partition=p) for n, t, p in _STAGES]
    )
    events = await ledger.task_events("task-x")
    assert sorted(e.shard for e in events) == [0, 1, 2]
    stages = await ledger.stages([t for _, t, _ in _STAGES])
    assert sorted(t for _, t, _ in stages) == sorted(t for _, t, _ in _STAGES)
    pages = [page async for page in ledger.chunks()]
    assert sum(len(p) for p in pages) == 3
    assert await ledger.size() == 3


_STAGES = [
    (1, "tandem.task.submitted.v1", 0),
    (2, "tandem.task.scored.v1", 1),
    (3, "tandem.decision.made.v1", 2),
]


async def test_every_shard_and_root_verifies(engines: list[AsyncEngine]) -> None:
    ledger = _sharded(engines)
    for start in range(1, 61, 12):
        await ledger.append([record(n) for n in range(start, start + 12)])
    await ledger.checkpoint()
    result = await ledger.verify(chunk_size=7, trusted_keys=[SIGNER.public_key])
    assert result.ok, result.failed
    assert (result.entries, result.tree_size) == (60, 60)
    assert result.roots == len(await ledger.roots()) > 1
    assert result.combined().ok


async def test_a_changed_entry_in_one_shard_fails_naming_that_shard(
    engines: list[AsyncEngine],
) -> None:
    ledger = _sharded(engines)
    await ledger.append([record(n) for n in range(1, 31)])
    await ledger.checkpoint()
    await _bypassing_the_triggers(engines[1], "UPDATE ledger SET source = 'forged' WHERE seq = 4")
    result = await ledger.verify()
    assert result.failed is not None
    shard, failure = result.failed
    assert (shard, failure.seq) == (1, 4)
    assert "column source differs" in failure.reason
    assert result.combined().failure is not None
    assert result.combined().failure.reason.startswith("shard 1: ")


async def test_a_shard_put_in_the_place_of_another_is_found(engines: list[AsyncEngine]) -> None:
    ledger = _sharded(engines)
    await ledger.append([record(n) for n in range(1, 31)])
    await ledger.checkpoint()
    swapped = _sharded([engines[0], engines[2], engines[1]], signer=SIGNER)
    result = await swapped.verify()
    assert result.failed is not None
    assert result.failed[0] == 1
    assert "is of 'tests/shard-2', not of 'tests/shard-1'" in result.failed[1].reason


async def test_a_root_naming_a_checkpoint_no_shard_holds_fails(engines: list[AsyncEngine]) -> None:
    ledger = _sharded(engines)
    await ledger.append([record(n) for n in range(1, 31)])
    await ledger.checkpoint()
    real = await ledger.latest_root()
    assert real is not None
    forged_head = replace(real.heads[1], root_hash="00" * 32)
    forged = sign_root(SIGNER, [real.heads[0], forged_head, real.heads[2]], utcnow())
    async with engines[0].begin() as conn:
        await conn.execute(
            ledger_root.insert(),
            [
                {
                    "digest": forged.digest,
                    "issued_at": forged.issued_at,
                    "origin": forged.origin,
                    "heads": heads_text(forged.heads),
                    "public_key": forged.public_key,
                    "signature": forged.signature,
                }
            ],
        )
    result = await ledger.verify()
    assert result.failed is not None
    assert result.failed[0] == 1
    assert "names a checkpoint of shard 1 at size" in result.failed[1].reason


async def test_a_root_signed_by_an_untrusted_key_fails(engines: list[AsyncEngine]) -> None:
    ledger = _sharded(engines)
    await ledger.append([record(n) for n in range(1, 31)])
    stranger = ShardedLedger(ledger.shards, Signer.generate("tests"))
    assert await stranger.sign_root() is not None
    result = await ledger.verify(trusted_keys=[SIGNER.public_key])
    assert result.failed is not None
    assert "untrusted key" in result.failed[1].reason


async def test_one_shard_is_the_ledger_as_it_always_was(engines: list[AsyncEngine]) -> None:
    ledger = _sharded(engines[:1])
    done = await ledger.append([record(n) for n in range(1, 31)])
    assert done.root is None and await ledger.roots() == []
    checkpoint = await ledger.latest_checkpoint()
    assert checkpoint is not None and checkpoint.origin == "tests"
    found = await ledger.prove_inclusion("event-8")
    assert found.root is None and found.proof.entry.seq == 8
    assert (await ledger.verify()).combined().tree_size == 30


async def _bypassing_the_triggers(engine: AsyncEngine, statement: str) -> None:
    async with engine.begin() as conn:
        if is_sqlite(str(engine.url)):
            await conn.execute(text("DROP TRIGGER ledger_no_update"))
        else:
            await conn.execute(text("ALTER TABLE ledger DISABLE TRIGGER ledger_no_update"))
        await conn.execute(text(statement))


def test_a_head_names_only_its_own_checkpoint() -> None:
    checkpoint = SIGNER.for_origin("tests/shard-1").sign(4, "ab" * 32, utcnow())
    head = ShardHead.of(1, checkpoint)
    assert head.names(checkpoint)
    assert not head.names(SIGNER.for_origin("tests/shard-2").sign(4, "ab" * 32, utcnow()))
    assert not head.names(SIGNER.for_origin("tests/shard-1").sign(5, "ab" * 32, utcnow()))
