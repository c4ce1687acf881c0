"""`tandem audit`: check the audit ledger's hash chain straight from its database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from tandem_audit_sink.ledger import VerifyResult
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.store import Ledger
from tandem_shared.db import create_engine, is_sqlite

audit_app = typer.Typer(
    help="The audit ledger: verify its hash chain from the database.", no_args_is_help=True
)
_stderr = Console(stderr=True)


@audit_app.callback()
def audit() -> None:
    """The audit ledger: verify its hash chain from the database."""


class LedgerUnreadable(Exception):
    """The ledger's database cannot be read at all."""


@audit_app.command()
def verify(
    database_url: Annotated[
        str | None,
        typer.Option(
            help="The ledger's database [default: TANDEM_AUDIT_DATABASE_URL, else the audit "
            "sink's SQLite file].",
            show_default=False,
        ),
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Rows read per query.")] = 1000,
) -> None:
    """Recompute every leaf and chain hash in seq order; exit 1 at the first bad row."""
    url = database_url or AuditSettings().database_url
    try:
        _refuse_missing_file(url)
        result = asyncio.run(_verify(url, chunk_size))
    except (LedgerUnreadable, SQLAlchemyError, OSError) as exc:
        _stderr.print(f"ERROR: cannot read the ledger at {_display(url)}: {exc}", markup=False)
        raise typer.Exit(2) from exc
    if result.failure is None:
        typer.echo(f"OK: {result.entries} entries verified")
        return
    typer.echo(f"FAILED at seq {result.failure.seq}: {result.failure.reason}")
    raise typer.Exit(1)


def _refuse_missing_file(url: str) -> None:
    """Opening a missing SQLite file would create an empty one: say it is missing instead."""
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path != ":memory:" and not Path(path).is_file():
            raise LedgerUnreadable("no such database file")


async def _verify(url: str, chunk_size: int) -> VerifyResult:
    engine = create_engine(url)
    try:
        ledger = Ledger(engine)
        head = await ledger.head()
        with Progress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_stderr,
            transient=True,
        ) as progress:
            task = progress.add_task("verify", total=head.seq if head else None)
            return await ledger.verify(
                chunk_size, head=head, on_chunk=lambda n: progress.advance(task, n)
            )
    finally:
        await engine.dispose()


def _display(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"
