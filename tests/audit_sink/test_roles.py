"""The migration step on real PostgreSQL: it migrates as the owner and makes the service's login
a member of the writer role, which appends, signs and verifies, and can change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from tandem_audit_sink.migrate import migrate_as_owner
from tandem_audit_sink.roles import RoleError, ServiceLogin
from tandem_audit_sink.store import Ledger, migrate
from tandem_shared.db import create_engine

from tests.audit_sink.conftest import CHECKPOINT_EVERY, SIGNER, record

# Quotes, a percent sign, a backslash, a placeholder and a statement: all of it is password.
HOSTILE = "it's 100% \\ $1 :v0 \"x\"'; DROP TABLE ledger; --"


def login_url(owner_url: str, name: str, password: str | None) -> str:
    return make_url(owner_url).set(username=name, password=password).render_as_string(False)


def scram_holds(verifier: str, password: str) -> bool:
    """Whether PostgreSQL's stored SCRAM-SHA-256 verifier is of ``password`` (RFC 5802): the
    test server trusts every local connection, so the password is checked here instead."""
    found = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    assert found, "not a SCRAM-SHA-256 verifier"
    iterations, salt, stored_key, _ = found.groups()
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


async def as_owner(owner_url: str, *statements: str) -> None:
    engine = create_engine(owner_url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def role_of(owner_url: str, name: str) -> tuple[str | None, list[str]]:
    """The login's stored password verifier and the roles it belongs to."""
    engine = create_engine(owner_url)
    try:
        async with engine.connect() as conn:
            verifier = await conn.scalar(
                text("SELECT rolpassword FROM pg_authid WHERE rolname = :n"), {"n": name}
            )
            member_of = await conn.execute(
                text(
                    "SELECT r.rolname FROM pg_auth_members m "
                    "JOIN pg_roles r ON r.oid = m.roleid "
                    "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = :n"
                ),
                {"n": name},
            )
            return verifier, sorted(member_of.scalars())
    finally:
        await engine.dispose()


def run_migration_command(owner_url: str, service_url: str) -> None:
    env = {
        **os.environ,
        "TANDEM_AUDIT_OWNER_DATABASE_URL": owner_url,
        "TANDEM_AUDIT_DATABASE_URL": service_url,
    }
    command = [sys.executable, "-m", "tandem_audit_sink.migrate"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert HOSTILE not in run.stdout + run.stderr


@pytest.mark.postgres
async def test_the_service_login_appends_and_verifies_and_changes_nothing(
    pg_database: Callable[[], str],
) -> None:
    owner_url = pg_database()
    name = f"audit_{uuid.uuid4().hex[:8]}"
    service_url = login_url(owner_url, name, HOSTILE)
    run_migration_command(owner_url, service_url)
    await migrate_as_owner(owner_url, service_url)  # again: the same login, the same password
    verifier, member_of = await role_of(owner_url, name)
    assert verifier and scram_holds(verifier, HOSTILE)
    assert member_of == ["tandem_audit_writer"]

    service = create_engine(service_url)
    ledger = Ledger(service, SIGNER, CHECKPOINT_EVERY)
    try:
        assert len((await ledger.append([record(n) for n in range(1, 4)])).appended) == 3
        assert await ledger.checkpoint() is not None  # on the timer's path
        assert (await ledger.append([record(n) for n in range(4, 9)])).checkpoint is not None
        result = await ledger.verify()
        assert (result.ok, result.tree_size, result.checkpoints) == (True, 8, 2)
        for statement in (
            "UPDATE ledger SET subject = 'x'",
            "DELETE FROM ledger",
            "DELETE FROM ledger_checkpoint",
            "TRUNCATE ledger_block",
            "ALTER TABLE ledger DISABLE TRIGGER ledger_no_update",
            "ALTER TABLE ledger DISABLE TRIGGER ledger_no_delete",
            "INSERT INTO ledger_archive VALUES (1, 'x', 1, 'f', 'd', now())",
            "DROP TABLE ledger_block",
        ):
            with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
                async with service.begin() as conn:
                    await conn.execute(text(statement))
    finally:
        await service.dispose()

    await migrate_as_owner(owner_url, login_url(owner_url, name, "a new one"))
    changed, member_of = await role_of(owner_url, name)
    assert changed and scram_holds(changed, "a new one") and not scram_holds(changed, HOSTILE)
    assert member_of == ["tandem_audit_writer"]


@pytest.mark.postgres
async def test_a_login_that_could_change_the_ledger_is_refused_and_left_alone(
    pg_database: Callable[[], str],
) -> None:
    owner_url = pg_database()
    await migrate(owner_url)
    owner = make_url(owner_url).username or ""
    before = await role_of(owner_url, owner)
    with pytest.raises(RoleError, match="may update, delete or truncate the ledger"):
        await migrate_as_owner(owner_url, login_url(owner_url, owner, "taken over"))
    assert await role_of(owner_url, owner) == before
    # A member of a role that may update the ledger; a new login where PUBLIC may.
    name, wide = f"audit_{uuid.uuid4().hex[:8]}", f"wide_{uuid.uuid4().hex[:8]}"
    await as_owner(
        owner_url,
        f"CREATE ROLE {wide} NOLOGIN",
        f"GRANT UPDATE ON ledger TO {wide}",
        f"CREATE ROLE {name} LOGIN IN ROLE {wide}",
    )
    with pytest.raises(RoleError, match="may update, delete or truncate the ledger"):
        await migrate_as_owner(owner_url, login_url(owner_url, name, "secret"))
    assert (await role_of(owner_url, name))[1] == [wide]
    await as_owner(owner_url, "GRANT DELETE ON ledger_block TO PUBLIC")
    fresh = f"audit_{uuid.uuid4().hex[:8]}"
    with pytest.raises(RoleError, match="may update, delete or truncate the ledger"):
        await migrate_as_owner(owner_url, login_url(owner_url, fresh, "secret"))
    assert await role_of(owner_url, fresh) == (None, [])  # its creation undone


def test_the_login_is_read_from_the_service_url_and_checked() -> None:
    login = ServiceLogin.of_url("postgresql+asyncpg://audit_sink:p%40ss%3Aw@db:5432/tandem")
    assert (login.name, login.password) == ("audit_sink", "p@ss:w")
    assert "p@ss" not in repr(login)
    assert ServiceLogin.of_url("postgresql+asyncpg://audit_sink@db/tandem").password is None
    for url, problem in [
        ("postgresql+asyncpg://db/tandem", "must be lower-case"),
        ('postgresql+asyncpg://"Audit"@db/tandem', "must be lower-case"),
        ("postgresql+asyncpg://audit;drop@db/tandem", "must be lower-case"),
        ("postgresql+asyncpg://tandem_audit_writer@db/tandem", "not a login itself"),
        ("sqlite+aiosqlite:///audit.db", "not PostgreSQL"),
    ]:
        with pytest.raises(RoleError, match=problem):
            ServiceLogin.of_url(url)


async def test_on_sqlite_the_migration_step_only_migrates(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await migrate_as_owner(url, url)
    engine = create_engine(url)
    try:
        assert await Ledger(engine).size() == 0
    finally:
        await engine.dispose()
