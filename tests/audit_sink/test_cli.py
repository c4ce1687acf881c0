"""`tandem audit` on a real ledger in each database: verify, prove, check offline, export."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

from click.testing import Result
from sqlalchemy import text
from tandem_audit_sink.checkpoint import Signer
from tandem_audit_sink.store import Ledger
from tandem_cli.audit import audit_app
from tandem_shared.db import is_sqlite
from typer.testing import CliRunner

from tests.audit_sink.conftest import SIGNER, record


async def run(*args: str, env: dict[str, str] | None = None) -> Result:
    # the command runs its own event loop, so it gets a thread of its own
    return await asyncio.to_thread(CliRunner().invoke, audit_app, list(args), env=env)


async def test_verify_prints_ok(database_url: str, ledger: Ledger) -> None:
    await ledger.append([record(n) for n in range(1, 8)])
    result = await run(
        "verify", "--database-url", database_url, "--chunk-size", "3",
        "--trust-key", SIGNER.public_key,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "OK: 7 entries verified, 1 signed checkpoints match; tree size 7" in result.stdout


async def test_the_default_database_comes_from_the_audit_settings(
    database_url: str, ledger: Ledger
) -> None:
    await ledger.append([record(1)])
    result = await run("verify", env={"TANDEM_AUDIT_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert "OK: 1 entries verified" in result.stdout


async def test_verify_prints_the_first_bad_row(database_url: str, ledger: Ledger) -> None:
    await ledger.append([record(n) for n in range(1, 8)])
    async with ledger.engine.begin() as conn:
        if is_sqlite(database_url):
            await conn.execute(text("DROP TRIGGER ledger_no_update"))
        else:
            await conn.execute(text("ALTER TABLE ledger DISABLE TRIGGER ledger_no_update"))
        await conn.execute(text("UPDATE ledger SET source = 'forged' WHERE seq = 5"))
    result = await run("verify", "--database-url", database_url, "--chunk-size", "2")
    assert result.exit_code == 1, result.output
    assert "FAILED at seq 5: entry mismatch: column source differs" in result.stdout


async def test_verify_from_a_trusted_checkpoint_and_against_kept_ones(
    database_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    await ledger.append([record(n) for n in range(1, 300)])
    first = await ledger.latest_checkpoint()
    assert first is not None
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps(first.document()))
    await ledger.append([record(n) for n in range(300, 320)])
    result = await run("verify", "--database-url", database_url, "--since", str(trusted))
    assert result.exit_code == 0, result.output
    assert "OK: 20 entries verified" in result.stdout
    # a checkpoint an auditor kept from a larger tree than the ledger now has: a cut tail
    beyond = SIGNER.sign(400, "ab" * 32, first.issued_at)
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps(beyond.document()))
    result = await run("verify", "--database-url", database_url, "--kept", str(kept))
    assert result.exit_code == 1
    assert "ledger truncated: it ends at seq 319" in result.stdout


async def test_prove_then_check_offline(database_url: str, ledger: Ledger, tmp_path: Path) -> None:
    await ledger.append([record(n) for n in range(1, 9)])
    old = await ledger.checkpoint_at(8)
    await ledger.append([record(n) for n in range(9, 13)])
    new = await ledger.checkpoint_at(12)
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps(new.document()))

    proved = await run("prove", "event-5", "--database-url", database_url)
    assert proved.exit_code == 0, proved.output
    proof = tmp_path / "proof.json"
    proof.write_text(proved.stdout)
    event = tmp_path / "event.json"
    event.write_text(json.dumps(record(5).data))
    checked = await run(
        "check", str(proof), "--checkpoint", str(trusted), "--public-key", SIGNER.public_key,
        "--event", str(event),
    )  # fmt: skip
    assert checked.exit_code == 0, checked.output
    assert f"OK: event event-5 is entry 5 of the tree of 12 signed by key {SIGNER.key_id}" in (
        checked.stdout
    )
    # the same proof with another public key, or for other data, fails
    stranger = Signer.generate("x").public_key
    refused = await run("check", str(proof), "--checkpoint", str(trusted), "--public-key", stranger)
    assert refused.exit_code == 1
    assert "untrusted key" in refused.stdout
    event.write_text(json.dumps(record(6).data))
    wrong = await run(
        "check", str(proof), "--checkpoint", str(trusted), "--public-key", SIGNER.public_key,
        "--event", str(event),
    )  # fmt: skip
    assert wrong.exit_code == 1
    assert "other data" in wrong.stdout

    consistency = await run(
        "prove", "--first", "8", "--second", "12", "--database-url", database_url
    )
    assert consistency.exit_code == 0, consistency.output
    proof.write_text(consistency.stdout)
    trusted.write_text(json.dumps(old.document()))
    checked = await run(
        "check", str(proof), "--checkpoint", str(trusted), "--public-key", SIGNER.public_key
    )
    assert checked.exit_code == 0, checked.output
    assert "OK: the tree of 12 extends the trusted one of 8" in checked.stdout

    missing = await run("prove", "nothing", "--database-url", database_url)
    assert missing.exit_code == 1
    assert "no event 'nothing'" in missing.stderr


async def test_prove_an_id_that_names_several_entries(
    database_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    """One id from two sources, and a conflict under one of them: say which entry to prove."""
    await ledger.append(
        [
            record(1),
            record(1, source="tests/elsewhere"),
            record(1, data={"task_id": "task-1", "changed": True}),  # a conflict with seq 1
            record(2),
        ]
    )
    trusted = tmp_path / "trusted.json"
    latest = await ledger.latest_checkpoint()
    assert latest is not None
    trusted.write_text(json.dumps(latest.document()))

    ambiguous = await run("prove", "event-1", "--database-url", database_url)
    assert ambiguous.exit_code == 1
    said = " ".join(ambiguous.stderr.split())  # the console wraps long lines
    assert "names 3 entries" in said
    assert "seq 3 from source 'tests/producer' (a conflict with seq 1)" in said
    elsewhere = await run(
        "prove", "event-1", "--source", "tests/elsewhere", "--database-url", database_url
    )
    assert elsewhere.exit_code == 0, elsewhere.output
    assert json.loads(elsewhere.stdout)["leaf_index"] == 1
    conflict = await run("prove", "event-1", "--seq", "3", "--database-url", database_url)
    assert conflict.exit_code == 0, conflict.output
    proof = tmp_path / "proof.json"
    proof.write_text(conflict.stdout)
    checked = await run(
        "check", str(proof), "--checkpoint", str(trusted), "--public-key", SIGNER.public_key
    )
    assert checked.exit_code == 0, checked.output
    assert "OK: event event-1 is entry 3 of the tree of 4" in checked.stdout


async def test_export_writes_entries_as_hashed(
    database_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    await ledger.append(
        [record(n, data={"task_type": "loan" if n % 2 else "fraud"}) for n in range(1, 11)]
        + [record(11, event_type="tandem.decision.made.v1", data={"task_type": "loan"})]
    )
    out = tmp_path / "export.jsonl"
    result = await run(
        "export", "-o", str(out), "--task-type", "loan", "--type", "tandem.task.submitted.v1",
        "--database-url", database_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 3, 5, 7, 9]
    stored = {e.seq: e.leaf_hash for e in await ledger.task_events("task-3")}
    leaf = hashlib.sha256(b"\x00" + lines[1].encode()).hexdigest()
    assert stored[3] == leaf
    everything = await run("export", "--database-url", database_url)
    assert len(everything.stdout.splitlines()) == 11


async def test_keygen_makes_a_key_the_service_reads() -> None:
    result = await run("keygen")
    assert result.exit_code == 0
    private = result.stdout.split("TANDEM_AUDIT_SIGNING_KEY=")[1].split()[0]
    signer = Signer.from_text(private, "x")
    assert f"public key: {signer.public_key}" in result.stdout
    assert len(base64.b64decode(private)) == 32


async def test_a_missing_database_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "audit.db"
    result = await run("verify", "--database-url", f"sqlite+aiosqlite:///{path}")
    assert result.exit_code == 2
    assert "cannot read the ledger" in result.stderr
    assert not path.exists()
