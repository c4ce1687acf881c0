"""Reading the audit ledger straight from its databases (every shard), for `tandem audit`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.shards import ShardedLedger
from tandem_shared.db import create_engine, is_sqlite

stderr = Console(stderr=True)
T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="The ledger's database [default: TANDEM_AUDIT_DATABASE_URL, else the audit "
        "sink's SQLite file].",
        show_default=False,
    ),
]
ShardUrls = Annotated[
    list[str] | None,
    typer.Option(
        "--shard-database-url",
        help="A further shard's database, in shard order; repeat for each [default: "
        "TANDEM_AUDIT_SHARD_DATABASE_URLS].",
        show_default=False,
    ),
]


class LedgerUnreadable(Exception):
    """The ledger's database cannot be read at all."""


def with_ledger(
    database_url: str | None,
    shard_urls: list[str] | None,
    work: Callable[[ShardedLedger], Awaitable[T]],
) -> T:
    """Run ``work`` on the ledger (every shard); exit 2 with the reason if a database cannot
    be read."""
    settings = AuditSettings()
    urls = [database_url or settings.database_url, *(shard_urls or settings.shard_database_urls)]

    async def run() -> T:
        engines = [create_engine(url) for url in urls]
        try:
            return await work(ShardedLedger.of(engines, None, origin=settings.origin))
        finally:
            for engine in engines:
                await engine.dispose()

    try:
        for url in urls:
            _refuse_missing_file(url)
        return asyncio.run(run())
    except (LedgerUnreadable, SQLAlchemyError, OSError) as exc:
        shown = ", ".join(_display(url) for url in urls)
        stderr.print(f"ERROR: cannot read the ledger at {shown}: {exc}", markup=False)
        raise typer.Exit(2) from exc


def _refuse_missing_file(url: str) -> None:
    """Opening a missing SQLite file would create an empty one: say it is missing instead."""
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path != ":memory:" and not Path(path).is_file():
            raise LedgerUnreadable("no such database file")


def _display(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"
