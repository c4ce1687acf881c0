"""`tandem audit archive` and `tandem audit check-archive`: the ledger's retention. Entries
older than the retention leave the database for files that still prove them; an auditor checks
those files with nothing but the ledger's public key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from tandem_audit_sink.archive import ArchiveError, ArchiveHeader, CheckedArchive, check_archive
from tandem_audit_sink.archiver import Archived, archive_before
from tandem_audit_sink.merkle import Frontier
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.shards import ShardedLedger
from tandem_audit_sink.store import LedgerError

from tandem_cli.ledger_access import ShardUrls, stderr, with_ledger

# The EU AI Act (Art. 26(6)) asks deployers to keep a high-risk system's logs six months at least.
SIX_MONTHS = 183


def archive(
    out: Annotated[Path, typer.Option(help="The directory the archive files go to.")],
    keep_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Keep the entries of this many days in the database [default: "
            "TANDEM_AUDIT_RETENTION_DAYS, 183].",
            show_default=False,
        ),
    ] = None,
    before: Annotated[
        datetime | None,
        typer.Option(help="Archive what was recorded before then (UTC), instead of by days."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="TANDEM_AUDIT_OWNER_DATABASE_URL",
            help="The ledger owner's database: the service's login may not delete [default: "
            "TANDEM_AUDIT_OWNER_DATABASE_URL, else TANDEM_AUDIT_DATABASE_URL].",
            show_default=False,
        ),
    ] = None,
    shard_database_url: ShardUrls = None,
) -> None:
    """Move each shard's entries older than the retention out of the database, into files
    that keep every proof (whole blocks under a signed checkpoint; the newest entry stays).
    Run it as the ledger's owner: the service's login may not delete."""
    days = keep_days or AuditSettings().retention_days
    if before is None and days < SIX_MONTHS:
        stderr.print(
            f"WARNING: keeping {days} days, less than the six months the EU AI Act asks of "
            "deployers' logs",
            markup=False,
        )
    cutoff = before or datetime.now(UTC) - timedelta(days=days)
    out.mkdir(parents=True, exist_ok=True)

    async def run(ledger: ShardedLedger) -> list[Archived | None]:
        return [await archive_before(shard, cutoff, out) for shard in ledger.shards]

    try:
        done = with_ledger(database_url, shard_database_url, run)
    except (ArchiveError, LedgerError) as exc:
        stderr.print(f"ERROR: {exc}", markup=False)
        raise typer.Exit(1) from exc
    for shard, archived in enumerate(done):
        if archived is None:
            typer.echo(f"shard {shard}: no whole block recorded before {cutoff:%Y-%m-%d %H:%M}")
            continue
        typer.echo(
            f"shard {shard}: entries {archived.first_seq} to {archived.last_seq} archived to "
            f"{archived.path}, proved under the checkpoint at {archived.checkpoint_size}"
        )


def check_archives(
    files: Annotated[list[Path], typer.Argument(help="Archive files, any order.")],
    public_key: Annotated[str, typer.Option(help="The ledger's public key (base64).")],
) -> None:
    """Check archive files with nothing but the ledger's public key: every entry hashes into
    the tree a signed checkpoint names, and each file continues the one before it in its
    shard, where that one is given too. Exit 1 at the first that does not hold."""
    ends: dict[tuple[int, int], Frontier] = {}  # (shard, last seq) -> the tree's edge there
    for path, header in sorted(_headers(files), key=lambda found: found[1]):
        shard, first_seq = header
        previous = ends.get((shard, first_seq - 1))
        try:
            with path.open(encoding="utf-8") as lines:
                checked = check_archive(lines, [public_key], previous)
        except (OSError, ArchiveError) as exc:
            typer.echo(f"FAILED: {path}: {exc}")
            raise typer.Exit(1) from exc
        ends[(shard, checked.header.last_seq)] = checked.end
        typer.echo(f"OK: {path}: {_said(checked, previous is not None)}")


def _headers(files: list[Path]) -> list[tuple[Path, tuple[int, int]]]:
    """Each file with its (shard, first seq), read from its header line."""
    found = []
    for path in files:
        try:
            with path.open(encoding="utf-8") as lines:
                header = ArchiveHeader.of(lines.readline())
        except (OSError, ArchiveError) as exc:
            typer.echo(f"FAILED: {path}: {exc}")
            raise typer.Exit(1) from exc
        found.append((path, (header.shard, header.first_seq)))
    return found


def _said(checked: CheckedArchive, chained: bool) -> str:
    header = checked.header
    after = "continuing the file before it" if chained else "its start taken as given"
    return (
        f"entries {header.first_seq} to {header.last_seq} of shard {header.shard} are in the "
        f"tree of {header.checkpoint.tree_size} signed by key {header.checkpoint.key_id} "
        f"({after})"
    )
