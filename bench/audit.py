"""The audit ledger on PostgreSQL: appends with hashing, blocks and signed checkpoints against a
plain batched insert of the same rows, then the verification of a million entries.

    uv run python bench/audit.py [--events 50000] [--batch 500] [--verify-entries 1000000]
                                 [--shards 1,2,4]

One run starts its own PostgreSQL server (a free port, a temporary folder) and no broker: the
sink's Kafka side is measured by the other benchmarks. The events are the pipeline's own:
sample tasks and their scored events (features, probabilities, explanations), as the sink
receives them. Phases, one after the other:

1. **ledger**: ``Ledger.append`` in batches of ``--batch`` on a migrated database: duplicate
   check, canonical JSON, leaf hashes, the tree's right edge, block hashes, and a signed
   checkpoint every 1,000 entries, each batch in one transaction;
2. **plain insert**: the same rows (already serialised, hashes included) inserted into the same
   table of a second database in the same batches, one transaction each: the database's share;
3. **plain COPY**: the same rows with COPY, a batch a transaction: the ledger's aims are
   stated against it;
4. **shards**: for each count of ``--shards`` (1, 2 and 4), a database per shard and a writer
   process per shard, as a replica of the sink that owns the shard's partitions; each appends
   its shard's records (spread on 4 partitions by task) a batch at a time, all started
   together: the rate is all their events over the time from the first start to the last end;
5. **verification**: a database filled with ``--verify-entries`` sealed entries (COPY, not
   timed), their blocks and a checkpoint every 1,000; then ``Ledger.verify`` is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as ProcessEvent
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
from tandem_audit_sink.roots import shard_origin
from tandem_audit_sink.store import Ledger, migrate
from tandem_audit_sink.tables import ledger, ledger_block, ledger_checkpoint
from tandem_cli.stack.postgres import PostgresServer
from tandem_cli.stack.process import free_port
from tandem_shared.db import create_engine

CHECKPOINT_EVERY = 1000
PARTITIONS = 4
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
    sharded: dict[int, float]  # events/s by shard count, one writer process per shard


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
                partition=(n // 2) % PARTITIONS,  # keyed by task, as the pipeline sends
                offset=n // 2 // PARTITIONS,
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


def shard_writer(
    url: str,
    shard: int,
    shards: int,
    args: argparse.Namespace,
    ready: ProcessEvent,
    go: ProcessEvent,
    done: Queue[tuple[int, float, float]],
) -> None:
    """A replica of the sink that owns one shard (the partitions that map to it): its records
    appended as the consumer appends them, a batch a transaction, once every writer is ready."""
    wanted = records(pipeline_events(min(args.events, 20_000), args.seed), args.events)
    mine = [r for r in wanted if r.partition % shards == shard]
    batches = [mine[i : i + args.batch] for i in range(0, len(mine), args.batch)]

    async def append() -> None:
        engine = create_engine(url)
        origin = shard_origin("bench", shard, shards)
        ledger = Ledger(engine, Signer.generate(origin), CHECKPOINT_EVERY, shard=shard)
        try:
            await ledger.size()  # connected before the start
            ready.set()
            await asyncio.to_thread(go.wait)
            started = time.time()
            for batch in batches:
                await ledger.append(batch)
            done.put((len(mine), started, time.time()))
        finally:
            await engine.dispose()

    asyncio.run(append())


async def sharded_rate(server: PostgresServer, args: argparse.Namespace, shards: int) -> float:
    """Events/s of ``shards`` writer processes, each on its shard's database, all started
    together: all their events over the time from the first start to the last end."""
    urls = [server.create_database(f"shards{shards}_{k}") for k in range(shards)]
    for url in urls:
        await migrate(url)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    done: Queue[tuple[int, float, float]] = ctx.Queue()
    writers = []
    try:
        for k, url in enumerate(urls):
            ready = ctx.Event()
            proc = ctx.Process(target=shard_writer, args=(url, k, shards, args, ready, go, done))
            proc.start()
            writers.append((proc, ready))
        for proc, ready in writers:
            while not await asyncio.to_thread(ready.wait, 1.0):
                if not proc.is_alive():
                    raise RuntimeError(f"shard writer {proc.pid} ended before it was ready")
        go.set()
        results = [await asyncio.to_thread(done.get, True, 600) for _ in writers]
    finally:
        for proc, _ in writers:
            if proc.is_alive():
                proc.terminate()  # by its pid
            proc.join(10)
    events = sum(r[0] for r in results)
    return events / (max(r[2] for r in results) - min(r[1] for r in results))


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

    sharded = {n: await sharded_rate(server, args, n) for n in args.shards}

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
        args.events,
        args.batch,
        with_hashing,
        plain,
        copied,
        result.entries,
        seconds,
        result.ok,
        sharded,
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
    shards = Table(
        title=f"the ledger in shards: one writer process each, records spread on {PARTITIONS} "
        "partitions"
    )
    for name in ("shards", "events/s", "× one shard", "per shard ÷ plain COPY", "aim"):
        shards.add_column(name, justify="right")
    one = f.sharded.get(1)
    for count, rate in sorted(f.sharded.items()):
        per_shard = rate / count / f.copy_rate
        shards.add_row(
            str(count),
            f"{rate:,.0f}",
            f"{rate / one:.2f}" if one else "",
            f"{per_shard:.2f}",
            "≥ 0.50: " + ("met" if per_shard >= 0.5 else "missed"),
        )
    console.print(shards)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--shards",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[1, 2, 4],
        help="Shard counts to measure, e.g. 1,2,4 (empty: none).",
    )
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
