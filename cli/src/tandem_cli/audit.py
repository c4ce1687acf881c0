"""`tandem audit`: verify, prove and export the audit ledger straight from its database, and
check proofs with nothing but a trusted checkpoint."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tandem_audit_sink.api import ConsistencyProofOut, InclusionProofOut
from tandem_audit_sink.auditor import check_consistency, check_inclusion, check_under_root
from tandem_audit_sink.checkpoint import Checkpoint, CheckpointError, Signer
from tandem_audit_sink.export import ExportFilter, export_query
from tandem_audit_sink.merkle import ProofError
from tandem_audit_sink.shards import ShardedLedger
from tandem_audit_sink.store import LedgerError
from tandem_audit_sink.verify import VerifyResult

from tandem_cli.audit_archive import archive, check_archives
from tandem_cli.ledger_access import DatabaseUrl, ShardUrls, stderr, with_ledger

audit_app = typer.Typer(
    help="The audit ledger: verify, prove, export; check proofs offline.", no_args_is_help=True
)
TrustedKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-key",
        help="A public key (base64) whose checkpoints are trusted; repeat for several. "
        "Without it, any key the ledger recorded is accepted.",
    ),
]


@audit_app.callback()
def audit() -> None:
    """The audit ledger: verify, prove, export; check proofs offline."""


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        stderr.print(f"ERROR: cannot read {what} {path}: {exc}", markup=False)
        raise typer.Exit(2) from exc


def _read_checkpoint(path: Path) -> Checkpoint:
    try:
        return Checkpoint.of(_read_json(path, "the checkpoint"))
    except CheckpointError as exc:
        stderr.print(f"ERROR: {path}: {exc}", markup=False)
        raise typer.Exit(2) from exc


@audit_app.command()
def verify(
    database_url: DatabaseUrl = None,
    shard_database_url: ShardUrls = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Rows read per query.")] = 1000,
    trust_key: TrustedKeys = None,
    since: Annotated[
        list[Path] | None,
        typer.Option(
            help="A checkpoint (JSON) trusted already: verify only what came after in its "
            "shard (the one its origin names); repeat for several shards."
        ),
    ] = None,
    kept: Annotated[
        list[Path] | None,
        typer.Option(help="Checkpoints (JSON) kept outside the ledger: a cut tail shows."),
    ] = None,
) -> None:
    """Recompute every entry, block and signed checkpoint of each shard in seq order, and every
    root over the shards; exit 1 at the first bad entry."""
    starts = [_read_checkpoint(path) for path in since or []]
    others = [_read_checkpoint(path) for path in kept or []]

    async def run(ledger: ShardedLedger) -> VerifyResult:
        trusted = {}
        for start in starts:
            shard = ledger.owner_of(start)
            if shard is None:
                raise LedgerError(f"no shard signs as {start.origin!r}")
            trusted[shard] = start
        total = await ledger.size() - sum(c.tree_size for c in trusted.values())
        with Progress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
        ) as progress:
            task = progress.add_task("verify", total=max(total, 0))
            done = await ledger.verify(
                chunk_size,
                trusted_keys=trust_key,
                since=trusted,
                kept=others,
                on_chunk=lambda n: progress.advance(task, n),
            )
            return done.combined()

    try:
        result = with_ledger(database_url, shard_database_url, run)
    except LedgerError as exc:
        stderr.print(f"ERROR: {exc}", markup=False)
        raise typer.Exit(2) from exc
    if result.failure is None:
        root = f", root {result.root_hash}" if result.root_hash else " in all shards"
        typer.echo(
            f"OK: {result.entries} entries verified, {result.checkpoints} signed checkpoints "
            f"match; tree size {result.tree_size}{root}"
        )
        return
    typer.echo(f"FAILED at seq {result.failure.seq}: {result.failure.reason}")
    raise typer.Exit(1)


@audit_app.command()
def prove(
    event_id: Annotated[str | None, typer.Argument(help="Prove this event's inclusion.")] = None,
    tree_size: Annotated[
        int | None, typer.Option(min=1, help="Against this checkpoint [default: the latest].")
    ] = None,
    first: Annotated[
        int | None, typer.Option(min=1, help="Prove consistency from this checkpoint's size…")
    ] = None,
    second: Annotated[int | None, typer.Option(min=1, help="…to this one's.")] = None,
    source: Annotated[
        str | None,
        typer.Option(help="The event's source, where its id came from more than one source."),
    ] = None,
    seq: Annotated[
        int | None,
        typer.Option(min=1, help="The entry's seq, where its id names several (a conflict)."),
    ] = None,
    shard: Annotated[
        int | None,
        typer.Option(min=0, help="The entry's shard; for --first and --second, the tree's [0]."),
    ] = None,
    database_url: DatabaseUrl = None,
    shard_database_url: ShardUrls = None,
) -> None:
    """Print an inclusion proof (EVENT_ID) or a consistency proof (--first and --second) as
    JSON, for `tandem audit check`. An id that names several entries (two sources, or a
    conflict) needs --source or --seq; the error lists them."""
    if (event_id is None) == (first is None or second is None):
        stderr.print("ERROR: give an EVENT_ID, or --first and --second", markup=False)
        raise typer.Exit(2)

    async def run(ledger: ShardedLedger) -> BaseModel:
        if event_id is not None:
            proof = await ledger.prove_inclusion(
                event_id, tree_size, source=source, seq=seq, shard=shard
            )
            return InclusionProofOut.of(proof)
        return ConsistencyProofOut.of(
            await ledger.prove_consistency(first or 0, second or 0, shard or 0)
        )

    try:
        proof = with_ledger(database_url, shard_database_url, run)
    except LedgerError as exc:
        stderr.print(f"ERROR: {exc}", markup=False)
        raise typer.Exit(1) from exc
    typer.echo(proof.model_dump_json(indent=2))


@audit_app.command()
def check(
    proof: Annotated[Path, typer.Argument(help="A proof printed by `tandem audit prove`.")],
    public_key: Annotated[str, typer.Option(help="The ledger's public key (base64).")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="The checkpoint (JSON) you trust [an inclusion proof of a sharded ledger: the "
            "one its root names, both signed by the key]."
        ),
    ] = None,
    event: Annotated[
        Path | None, typer.Option(help="The event's data (JSON) the entry must record.")
    ] = None,
) -> None:
    """Check a proof with nothing but a trusted checkpoint (or, in a sharded ledger, the
    signed root the proof carries) and the ledger's public key: no database, no server."""
    doc = _read_json(proof, "the proof")
    under_root = isinstance(doc, dict) and doc.get("root") is not None and checkpoint is None
    if checkpoint is None and not under_root:
        stderr.print("ERROR: give --checkpoint (the proof carries no root)", markup=False)
        raise typer.Exit(2)
    try:
        if under_root:
            trusted = check_under_root(doc, [public_key])
        else:
            assert checkpoint is not None
            trusted = _read_checkpoint(checkpoint)
        trusted.check([public_key])
        if isinstance(doc, dict) and "entry" in doc:
            data = _read_json(event, "the event") if event else None
            entry = check_inclusion(doc, trusted, data)
            shard = f" of shard {doc.get('shard')}" if under_root else ""
            typer.echo(
                f"OK: event {entry.get('id')} is entry {entry.get('seq')} of the tree of "
                f"{trusted.tree_size}{shard} signed by key {trusted.key_id}"
            )
        else:
            newer = check_consistency(doc, trusted, [public_key])
            typer.echo(
                f"OK: the tree of {newer.tree_size} extends the trusted one of "
                f"{trusted.tree_size}; root {newer.root_hash}"
            )
    except (ProofError, CheckpointError) as exc:
        typer.echo(f"FAILED: {exc}")
        raise typer.Exit(1) from exc


@audit_app.command()
def export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="JSON lines file [default: stdout].")
    ] = None,
    since: Annotated[datetime | None, typer.Option(help="Recorded from then (UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Recorded before then (UTC).")] = None,
    event_type: Annotated[list[str] | None, typer.Option("--type", help="Event type.")] = None,
    task_type: Annotated[list[str] | None, typer.Option(help="Task type.")] = None,
    database_url: DatabaseUrl = None,
    shard_database_url: ShardUrls = None,
) -> None:
    """Entries as JSON lines, each exactly as hashed (SHA-256 of 0x00 and the line is its leaf
    hash)."""
    wanted = ExportFilter(since, until, event_type or [], task_type or [])

    async def run(ledger: ShardedLedger) -> int:
        count = 0
        sink = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            async for rows in ledger.chunks(export_query(wanted)):
                sink.write("".join(f"{row.canonical}\n" for row in rows))
                count += len(rows)
        finally:
            if output:
                sink.close()
        return count

    count = with_ledger(database_url, shard_database_url, run)
    stderr.print(f"exported {count} entries", markup=False)


@audit_app.command()
def keygen() -> None:
    """Make an Ed25519 signing key: set the private one as TANDEM_AUDIT_SIGNING_KEY (a secret)
    and give the public one to auditors."""
    signer = Signer.generate("tandem-audit")
    typer.echo(f"TANDEM_AUDIT_SIGNING_KEY={signer.private_text()}")
    typer.echo(f"public key: {signer.public_key}")
    typer.echo(f"key id: {signer.key_id}")


audit_app.command()(archive)
audit_app.command("check-archive")(check_archives)
