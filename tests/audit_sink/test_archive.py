"""Retention on a real ledger in each database: old whole blocks leave for archive files that
prove every entry under a signed checkpoint, the database keeps verifying what stays, refuses to
let anything unarchived go, and a changed archive is caught offline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from tandem_audit_sink.archive import ArchiveError, archive_bound, check_archive
from tandem_audit_sink.archiver import Archived, archive_before
from tandem_audit_sink.auditor import check_inclusion
from tandem_audit_sink.merkle import BLOCK
from tandem_audit_sink.store import Ledger, LedgerError
from tandem_shared.envelope import utcnow

from tests.audit_sink.conftest import SIGNER, record
from tests.audit_sink.test_cli import run

TRUSTED = [SIGNER.public_key]


@pytest.mark.parametrize(
    ("size", "signed", "first_young", "archived", "bound"),
    [
        (700, 700, None, 0, 512),  # every entry old: whole blocks only
        (700, 300, None, 0, 256),  # no further than a signed checkpoint reaches
        (700, 700, 400, 0, 256),  # no entry recorded after the cutoff
        (512, 512, None, 0, 256),  # the newest entry stays
        (700, 700, 200, 0, 0),  # not one whole block is old
        (700, 700, None, 512, 512),  # archived already
    ],
)
def test_an_archive_ends_at_the_last_whole_block_old_and_signed(
    size: int, signed: int, first_young: int | None, archived: int, bound: int
) -> None:
    assert archive_bound(size, signed, first_young, archived) == bound


async def fill(ledger: Ledger, first: int, last: int) -> None:
    await ledger.append([record(n) for n in range(first, last + 1)])
    await ledger.checkpoint()


async def archived_until_now(ledger: Ledger, directory: Path) -> Archived:
    cutoff = utcnow()
    await asyncio.sleep(0.01)
    done = await archive_before(ledger, cutoff, directory)
    assert done is not None
    return done


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


async def test_old_blocks_leave_for_files_that_prove_them_and_what_stays_verifies(
    ledger: Ledger, tmp_path: Path
) -> None:
    await fill(ledger, 1, 600)
    first = await archived_until_now(ledger, tmp_path)
    assert (first.first_seq, first.last_seq, first.checkpoint_size) == (1, 2 * BLOCK, 600)
    assert len(lines(first.path)) == 1 + 2 * BLOCK

    # The database holds the rest, and verifies from the archived prefix on.
    await fill(ledger, 601, 900)
    result = await ledger.verify(trusted_keys=TRUSTED)
    assert result.ok, result.failure
    assert (result.entries, result.tree_size) == (900 - 2 * BLOCK, 900)
    assert result.root_hash == (await ledger.latest_checkpoint()).root_hash  # type: ignore[union-attr]

    # A remaining entry is still proven under the latest checkpoint; an archived one is not
    # in the database any more (its file proves it).
    proof = await ledger.prove_inclusion("event-800")
    check_inclusion(
        {"entry": proof.entry.canonical, "leaf_index": 799, "path": proof.path,
         "tree_size": proof.checkpoint.tree_size},
        proof.checkpoint,
    )  # fmt: skip
    with pytest.raises(LedgerError, match="no event"):
        await ledger.prove_inclusion("event-3")

    # The next archive continues the first; each checks offline, and they chain.
    second = await archived_until_now(ledger, tmp_path)
    assert (second.first_seq, second.last_seq) == (2 * BLOCK + 1, 3 * BLOCK)
    checked = check_archive(lines(first.path), TRUSTED)
    check_archive(lines(second.path), TRUSTED, previous=checked.end)
    with pytest.raises(ArchiveError, match="does not continue"):
        check_archive(lines(second.path), TRUSTED, previous=checked.header.start_frontier())
    assert (await ledger.verify(trusted_keys=TRUSTED)).ok
    # The sink's own verification, from a checkpoint it trusted before the archive, goes on
    # from the archived prefix: what was archived is its files' to prove.
    old = await ledger.checkpoint_at(600)
    since_old = await ledger.verify(trusted_keys=TRUSTED, since=old)
    assert since_old.ok and since_old.entries == 900 - 3 * BLOCK
    assert await archive_before(ledger, utcnow(), tmp_path) is None  # the newest stays

    # Nothing unarchived may leave, even for the database's owner.
    with pytest.raises(DBAPIError, match="append-only"):
        async with ledger.engine.begin() as conn:
            await conn.execute(text(f"DELETE FROM ledger WHERE seq = {3 * BLOCK + 1}"))


async def test_a_changed_archive_is_caught_with_nothing_but_the_public_key(
    ledger: Ledger, tmp_path: Path
) -> None:
    await fill(ledger, 1, 300)
    archived = await archived_until_now(ledger, tmp_path)
    original = lines(archived.path)
    check_archive(original, TRUSTED)

    entry = json.loads(original[10])
    entry["data"]["features"]["amount"] = 1_000_000
    forged = [*original[:10], json.dumps(entry, separators=(",", ":")) + "\n", *original[11:]]
    with pytest.raises(ArchiveError, match="do not hash to the header's root"):
        check_archive(forged, TRUSTED)
    with pytest.raises(ArchiveError, match="seq 11 was due"):
        check_archive([*original[:11], *original[12:]], TRUSTED)
    with pytest.raises(ArchiveError, match="untrusted key"):
        check_archive(original, ["c29tZW9uZSBlbHNl"])
    header = json.loads(original[0])
    header["root_hash"] = "0" * 64
    with pytest.raises(ArchiveError, match="header's root"):
        check_archive([json.dumps(header) + "\n", *original[1:]], TRUSTED)


async def test_tandem_audit_archive_and_check_archive(
    database_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    await fill(ledger, 1, 600)
    cutoff = utcnow().isoformat()
    await fill(ledger, 601, 700)
    out = tmp_path / "archive"
    archived = await run(
        "archive", "--out", str(out), "--before", cutoff, "--database-url", database_url
    )
    assert archived.exit_code == 0, archived.output
    [file] = sorted(out.iterdir())
    assert f"shard 0: entries 1 to 512 archived to {file}" in archived.stdout
    again = await run(
        "archive", "--out", str(out), "--before", cutoff, "--database-url", database_url
    )
    assert "shard 0: no whole block recorded before" in again.stdout

    checked = await run("check-archive", str(file), "--public-key", SIGNER.public_key)
    assert checked.exit_code == 0, checked.output
    assert "entries 1 to 512 of shard 0 are in the tree of 600" in checked.stdout
    verified = await run("verify", "--database-url", database_url)
    assert verified.exit_code == 0, verified.output
    assert "OK: 188 entries verified" in verified.stdout

    file.write_text(file.read_text().replace('"amount":7}', '"amount":8}'))
    refused = await run("check-archive", str(file), "--public-key", SIGNER.public_key)
    assert refused.exit_code == 1 and "FAILED" in refused.stdout
