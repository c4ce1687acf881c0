"""The service's login on PostgreSQL: a member of the writer role, which may only SELECT and
INSERT on the ledger's tables (migration ``audit_0002`` creates that role and its grants).

The migration step, connected as the schema's owner, creates the login or brings it up to
date: the user and password of the service's own database URL. The password goes to the server
as a bound value and is quoted there (``format('%L')``), so no password can change the statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from tandem_shared.db import create_engine

WRITER_ROLE = "tandem_audit_writer"
LEDGER_TABLES = ("ledger", "ledger_block", "ledger_checkpoint", "ledger_root", "ledger_archive")
# Plain lower-case names only: they read the same quoted or not, in SQL and in a URL.
LOGIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RoleError(ValueError):
    """A service login that would not confine the service, or that cannot be made."""


@dataclass(frozen=True)
class ServiceLogin:
    name: str
    password: str | None  # None: keep whatever password (or none) the role has

    @classmethod
    def of_url(cls, url: str) -> ServiceLogin:
        """The user and password of a PostgreSQL URL (percent-encoded there, as in any URL)."""
        parsed = make_url(url)
        if not parsed.drivername.startswith("postgresql"):
            raise RoleError(f"the service's database URL is not PostgreSQL ({parsed.drivername})")
        name = parsed.username or ""
        if not LOGIN_NAME.fullmatch(name):
            raise RoleError(
                f"the service's login {name!r} must be lower-case letters, digits and _ "
                "(63 at most, not starting with a digit)"
            )
        if name == WRITER_ROLE:
            raise RoleError(f"{WRITER_ROLE} is the role the login joins, not a login itself")
        return cls(name, parsed.password)

    def __repr__(self) -> str:
        return f"ServiceLogin({self.name!r})"  # never the password


async def grant_login(owner_url: str, login: ServiceLogin) -> None:
    """Create the login as a member of the writer role, or set its password and membership
    again, in one transaction: a refusal leaves the roles as they were. A login that may change
    the ledger (its owner, a superuser) is refused before anything is done to it."""
    engine = create_engine(owner_url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            exists = bool(
                await conn.scalar(
                    text("SELECT count(*) FROM pg_roles WHERE rolname = :name"),
                    {"name": login.name},
                )
            )
            if exists and await _may_change_ledger(conn, login.name):
                raise _too_wide(login.name)
            verb = "ALTER" if exists else "CREATE"
            if login.password is None:
                await _run_formatted(conn, f"{verb} ROLE %I LOGIN", login.name)
            else:
                await _run_formatted(
                    conn, f"{verb} ROLE %I LOGIN PASSWORD %L", login.name, login.password
                )
            await _run_formatted(conn, f"GRANT {WRITER_ROLE} TO %I", login.name)
            if await _may_change_ledger(conn, login.name):  # granted to PUBLIC, say
                raise _too_wide(login.name)
    finally:
        await engine.dispose()


def _too_wide(name: str) -> RoleError:
    return RoleError(
        f"role {name!r} may update, delete or truncate the ledger (as its owner, a superuser, "
        "or by a grant to it, a role it belongs to or PUBLIC): give the service a login of its "
        "own that may not"
    )


async def _run_formatted(conn: AsyncConnection, template: str, *values: str) -> None:
    """Run ``template`` with ``values`` quoted by the server (%I an identifier, %L a literal):
    role statements take no bound parameters, so the server builds the statement instead."""
    arguments = ", ".join(f"CAST(:v{n} AS text)" for n in range(len(values)))
    statement = await conn.scalar(
        text(f"SELECT format(:template, {arguments})"),
        {"template": template} | {f"v{n}": value for n, value in enumerate(values)},
    )
    await conn.exec_driver_sql(str(statement))


async def _may_change_ledger(conn: AsyncConnection, name: str) -> bool:
    """Whether ``name`` may UPDATE, DELETE or TRUNCATE a ledger table (an owner or a superuser
    may, and so may anyone granted it)."""
    found = await conn.scalar(
        text(
            "SELECT bool_or(has_table_privilege(:name, t, 'UPDATE, DELETE, TRUNCATE')) "
            "FROM unnest(CAST(:tables AS text[])) AS t"
        ),
        {"name": name, "tables": list(LEDGER_TABLES)},
    )
    return bool(found)
