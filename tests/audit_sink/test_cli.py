"""`tandem audit verify` on a real ledger in each database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import Result
from sqlalchemy import text
from tandem_audit_sink.store import Ledger
from tandem_cli.audit import audit_app
from tandem_shared.db import is_sqlite
from typer.testing import CliRunner

from tests.audit_sink.conftest import record


async def run(*args: str, env: dict[str, str] | None = None) -> Result:
    # the command runs its own event loop, so it gets a thread of its own
    return await asyncio.to_thread(CliRunner().invoke, audit_app, list(args), env=env)


async def test_verify_prints_ok(database_url: str, ledger: Ledger) -> None:
    await ledger.append([record(n) for n in range(1, 8)])
    result = await run("verify", "--database-url", database_url, "--chunk-size", "3")
    assert result.exit_code == 0, result.output
    assert "OK: 7 entries verified" in result.stdout


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


async def test_a_missing_database_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "audit.db"
    result = await run("verify", "--database-url", f"sqlite+aiosqlite:///{path}")
    assert result.exit_code == 2
    assert "cannot read the ledger" in result.stderr
    assert not path.exists()
