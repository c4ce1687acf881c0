"""The audit ledger on PostgreSQL: appends with hashing, blocks and signed checkpoints against a
plain batched insert of the same rows, then the verification of a million entries.

    uv run python bench/audit.py [--events 50000] [--batch 500] [--verify-entries 1000000]

One run starts its own PostgreSQL server (a free port, a temporary folder) and no broker: the
sink's Kafka side is measured by the other benchmarks. The events are the pipeline's own:
sample tasks and their scored events (features, probabilities, explanations), as the sink
receives them. Phases, one after the other:

1. **ledger**: ``Ledger.append`` in batches of ``--batch`` on a migrated database: duplicate
   check, canonical JSON, leaf hashes, the tree's right edge, block hashes, and a signed
   checkpoint every 1,000 entries, each batch in one transaction;
2. **plain insert**: the same rows (already serialised, hashes included) inserted into the same
   table of a second database in the same batches, one transaction each: the database's share;
3. **verification**: a third database filled with ``--verify-entries`` sealed entries (COPY,
   not timed), their blocks and a checkpoint every 1,000; then ``Ledger.verify`` is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import draw_tasks, score
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine
from tandem_audit_sink.checkpoint import Signer
from tandem_audit_sink.ledger import AuditRecord, StoredEntry, seal
from tandem_audit_sink.merkle import Frontier
from tandem_audit_sink.store import Ledger, migrate
from tandem_audit_sink.tables import ledger, ledger_block, ledger_checkpoint
from tandem_cli.stack.postgres import PostgresServer
from tandem_cli.stack.process import free_port
from tandem_shared.db import create_engine

CHECKPOINT_EVERY = 1000
T0 = datetime(2026, 11, 25, tzinfo=UTC)


@dataclass(frozen=True)
class Figures:
    events: int
    batch: int
    ledger_rate: float
    plain_rate: float
    copy_rate: float
    verify_entries: int
    verify_seconds: float
    verified_ok: bool


def pipeline_events(count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """(event type, data) of sample tasks and their scored events, half and half."""
    tasks = draw_tasks((count + 1) // 2, seed)
    scored = score(tasks, 500)
    out: list[tuple[str, dict[str, Any]]] = []
    for task, result in zip(tasks, scored, strict=True):
        out.append(("tandem.task.submitted.v1", task.model_dump(mode="json")))
        out.append(("tandem.task.scored.v1", result.model_dump(mode="json")))
    return out[:count]


def records(events: Sequence[tuple[str, dict[str, Any]]], count: int) -> list[AuditRecord]:
    """``count`` records with their own ids, cycling through the events' data."""
    out = []
    for n in range(count):
        event_type, data = events[n % len(events)]
        task_id = f"task-{n // 2}"
        out.append(
            AuditRecord(
                event_id=f"event-{n}",
                event_type=event_type,
                source="bench/producer",
                subject=task_id,
                event_time=T0 + timedelta(milliseconds=n),
                topic="tandem.tasks.scored" if "scored" in event_type else "tandem.tasks.submitted",
                partition=n % 3,
                offset=n // 3,
                key=task_id,
                data=data,
                headers={"ce_id": f"event-{n}"},
            )
        )
    return out


def rows_of(entries: Sequence[StoredEntry]) -> list[dict[str, Any]]:
    return [e.columns() | {"canonical": e.canonical, "leaf_hash": e.leaf_hash} for e in entries]


async def fresh(server: PostgresServer, name: str) -> AsyncEngine:
    url = server.create_database(name)
    await migrate(url)
    return create_engine(url)


async def ledger_rate(
    engine: AsyncEngine, batches: list[list[AuditRecord]]
) -> tuple[float, list[StoredEntry]]:
    target = Ledger(engine, Signer.generate("bench"), CHECKPOINT_EVERY)
    appended: list[StoredEntry] = []
    started = time.perf_counter()
    for batch in batches:
        appended += (await target.append(batch)).appended
    return len(appended) / (time.perf_counter() - started), appended


async def plain_rate(engine: AsyncEngine, rows: list[dict[str, Any]], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        async with engine.begin() as conn:
            await conn.execute(ledger.insert(), rows[start : start + batch])
    return len(rows) / (time.perf_counter() - started)


async def copy_rate(engine: AsyncEngine, rows: list[dict[str, Any]], batch: int) -> float:
    """The same rows with COPY, a batch a transaction: the fastest the database takes them."""
    columns = [c.name for c in ledger.columns]
    records = [tuple(row[c] for c in columns) for row in rows]
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        async with engine.begin() as conn:
            raw = await conn.get_raw_connection()
            pg: Any = raw.driver_connection
            await pg.copy_records_to_table(
                "ledger", records=records[start : start + batch], columns=columns
            )
    return len(records) / (time.perf_counter() - started)


async def fill(
    engine: AsyncEngine,
    entries: int,
    events: Sequence[tuple[str, dict[str, Any]]],
    progress: Progress,
) -> None:
    """Sealed entries, their blocks and signed checkpoints, written with COPY."""
    signer = Signer.generate("bench")
    frontier = Frontier()
    bar = progress.add_task("filling the ledger to verify", total=entries)
    recorded = datetime.now(UTC)
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pg: Any = raw.driver_connection
        columns = [c.name for c in ledger.columns]
        checkpoint_columns = [c.name for c in ledger_checkpoint.columns]
        for start in range(0, entries, 10_000):
            chunk = records(events, min(10_000, entries - start))
            rows, blocks, checkpoints = [], [], []
            for n, record in enumerate(chunk, start=start + 1):
                record = AuditRecord(**{**asdict(record), "event_id": f"event-{n}"})
                entry = seal(record, n, recorded)
                values = rows_of([entry])[0]
                rows.append(tuple(values[c] for c in columns))
                done = frontier.push(bytes.fromhex(entry.leaf_hash))
                if done is not None:
                    blocks.append((done[0], done[1].hex()))
                if n % CHECKPOINT_EVERY == 0 or n == entries:
                    made = signer.sign(n, frontier.root().hex(), recorded)
                    checkpoints.append(tuple(asdict(made)[c] for c in checkpoint_columns))
            await pg.copy_records_to_table("ledger", records=rows, columns=columns)
            await pg.copy_records_to_table(
                "ledger_block", records=blocks, columns=[c.name for c in ledger_block.columns]
            )
            await pg.copy_records_to_table(
                "ledger_checkpoint",
                records=checkpoints,
                columns=checkpoint_columns,
            )
            progress.advance(bar, len(chunk))
    progress.remove_task(bar)


async def measure(server: PostgresServer, args: argparse.Namespace, progress: Progress) -> Figures:
    events = pipeline_events(min(args.events, 20_000), args.seed)
    wanted = records(events, args.events)
    batches = [wanted[i : i + args.batch] for i in range(0, len(wanted), args.batch)]

    engine = await fresh(server, "ledger")
    try:
        with_hashing, appended = await ledger_rate(engine, batches)
    finally:
        await engine.dispose()
    engine = await fresh(server, "plain")
    try:
        plain = await plain_rate(engine, rows_of(appended), args.batch)
    finally:
        await engine.dispose()
    engine = await fresh(server, "copy")
    try:
        copied = await copy_rate(engine, rows_of(appended), args.batch)
    finally:
        await engine.dispose()

    engine = await fresh(server, "verify")
    try:
        await fill(engine, args.verify_entries, events, progress)
        bar = progress.add_task("verifying", total=args.verify_entries)
        started = time.perf_counter()
        result = await Ledger(engine).verify(
            chunk_size=5000, on_chunk=lambda n: progress.advance(bar, n)
        )
        seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    return Figures(
        args.events, args.batch, with_hashing, plain, copied, result.entries, seconds, result.ok
    )


def report(console: Console, f: Figures) -> None:
    table = Table(title=f"audit ledger on PostgreSQL: {f.events:,} events in batches of {f.batch}")
    table.add_column("phase")
    table.add_column("figure", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row("plain COPY (events/s)", f"{f.copy_rate:,.0f}", "1")
    table.add_row(
        "plain batched insert (events/s)",
        f"{f.plain_rate:,.0f}",
        f"{f.plain_rate / f.copy_rate:.2f}",
    )
    table.add_row(
        "ledger append: hashing, blocks, signed checkpoints (events/s)",
        f"{f.ledger_rate:,.0f}",
        f"{f.ledger_rate / f.copy_rate:.2f}",
    )
    verdict = "verified" if f.verified_ok else "FAILED"
    table.add_row(
        f"verification of {f.verify_entries:,} entries ({verdict})",
        f"{f.verify_seconds:,.1f} s",
        f"{f.verify_entries / f.verify_seconds:,.0f}/s",
    )
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    home.chmod(0o711)  # the postgres user must reach its folder below this one
    server = PostgresServer(home / "postgres", free_port())
    try:
        server.start()
        with Progress(console=console, transient=True) as progress:
            figures = asyncio.run(measure(server, args, progress))
        report(console, figures)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
