"""Transactions per input partition against one for all: the router's added latency, by layout.

The router writes, for every task, a routed or decided event and a seen-log record, each at the
input's partition number: with one transactional producer for all its partitions, a caught-up
batch's transaction writes 12 partitions (4 on each topic) and its commit waits for all of
them. Kafka Streams' first exactly-once mode had one producer per input partition instead, so
each transaction writes 3 and the partitions commit side by side.

Two exactly-once relays that write the router's layout (no routing work: what is measured is
the transactions), fed the same paced stream of scored events on topics of their own:

- ``one producer``: as the services' loop does, one transaction per batch, every partition's
  records and offsets in it;
- ``a producer per partition``: one thread and transactional producer per input partition,
  each committing its partition's records and offset; the consumer hands batches on.

The table gives each one's p50 and p99 added latency (first output's append time less the
input's) and the difference. Run on an idle machine:

    uv run python bench/txn_layout.py --rate 5700 --latency-seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import queue
import signal
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.synchronize import Event as ProcessEvent

from confluent_kafka import Consumer, Message, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from harness import (
    PARTITIONS,
    RELAY_GROUP,
    WAIT_S,
    Latency,
    Pipeline,
    Running,
    Stack,
    make_topics,
    paced_records,
    run_bench,
    scored_records,
    stop_relay,
)
from rich.console import Console
from rich.table import Table
from tandem_shared import clients
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

LAYOUTS = {"one": "one producer", "partitioned": "a producer per partition"}
DECIDED_SHARE = 72  # of 100 tasks the router decides (the rest go to people), as in router.py
SEEN = b"1"  # a seen-log record's value: what it holds matters little to the broker's work


def stamped(topics: Topics) -> tuple[str, ...]:
    return (topics.scored, topics.routed, topics.decisions)


def _outputs(topics: Topics, m: Message) -> list[tuple[str, bytes, bytes | None]]:
    """The router's records for one task: its decision or its review, and its seen-log entry."""
    key = m.key() or b""
    decided = zlib.crc32(key) % 100 < DECIDED_SHARE
    target = topics.decisions if decided else topics.routed
    return [(target, key, m.value()), (topics.router_seen, key, SEEN)]


def _transaction(
    producer: Producer,
    topics: Topics,
    messages: list[Message],
    metadata: object,
) -> None:
    """One batch, its outputs at the input's partition numbers and its offsets, committed."""
    last: dict[int, int] = {}
    for m in messages:
        last[m.partition() or 0] = m.offset() or 0
    offsets = [ConfluentPartition(topics.scored, p, o + 1) for p, o in last.items()]
    producer.begin_transaction()
    producer.send_offsets_to_transaction(offsets, metadata, 30)
    for m in messages:
        for topic, key, value in _outputs(topics, m):
            producer.produce(topic, value, key, partition=m.partition() or 0)
    producer.commit_transaction(30)


def _producer(kafka: KafkaSettings, group: str, member: int | None) -> Producer:
    producer = Producer(
        clients.transactional_producer(
            kafka,
            "bench-layout",
            clients.transactional_id(group, None if member is None else f"p{member}"),
            10_000,
        )
    )
    producer.init_transactions(30)
    return producer


def relay_main(layout: str, bootstrap: str, prefix: str, batch: int, ready: ProcessEvent) -> None:
    """The relay of ``layout`` until SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    topics = Topics(prefix)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    group = RELAY_GROUP + topics.scored
    consumer = Consumer(clients.transactional_consumer(kafka, group, "bench-layout"))
    # A batch for one partition's committer: its messages and the group's metadata then.
    hand_on: list[queue.Queue[tuple[list[Message], object]]] = []
    workers: list[threading.Thread] = []
    if layout == "partitioned":
        for partition in range(PARTITIONS):
            work: queue.Queue[tuple[list[Message], object]] = queue.Queue()
            producer = _producer(kafka, group, partition)
            worker = threading.Thread(
                target=_committer, args=(producer, topics, work, stop), daemon=True
            )
            worker.start()
            hand_on.append(work)
            workers.append(worker)
        single = None
    else:
        single = _producer(kafka, group, None)
    consumer.subscribe([topics.scored], on_assign=lambda *_: ready.set())
    try:
        while not stop.is_set():
            first = consumer.poll(0.05)
            if first is None:
                continue
            messages = [m for m in [first, *consumer.consume(batch - 1, 0)] if m.error() is None]
            metadata = consumer.consumer_group_metadata()
            if single is not None:
                _transaction(single, topics, messages, metadata)
                continue
            by_partition: dict[int, list[Message]] = {}
            for m in messages:
                by_partition.setdefault(m.partition() or 0, []).append(m)
            for partition, mine in by_partition.items():
                hand_on[partition].put((mine, metadata))
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        consumer.close()


def _committer(
    producer: Producer,
    topics: Topics,
    work: queue.Queue[tuple[list[Message], object]],
    stop: threading.Event,
) -> None:
    """One partition's transactions: whatever was handed on while the last one committed goes
    in the next, so a partition never waits on another's commit."""
    while not stop.is_set():
        try:
            messages, metadata = work.get(timeout=0.1)
        except queue.Empty:
            continue
        while True:
            try:
                more, metadata = work.get_nowait()
            except queue.Empty:
                break
            messages.extend(more)
        _transaction(producer, topics, messages, metadata)


@dataclass
class Bench:
    stack: Stack
    batch: int

    async def pipeline(self, layout: str, round_: int) -> Pipeline:
        prefix = self.stack.prefix(f"{layout}-{round_}")
        topics = await make_topics(self.stack.bootstrap, prefix, stamped)
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(
            target=relay_main,
            args=(layout, self.stack.bootstrap, topics.prefix, self.batch, ready),
            daemon=True,
        )

        async def start() -> Running:
            proc.start()
            self.stack.relays.append(proc)
            await asyncio.to_thread(ready.wait, WAIT_S)
            return Running(proc.is_alive, lambda: stop_relay(proc))

        return Pipeline(topics.scored, (topics.routed, topics.decisions), start)


def report(console: Console, measured: list[tuple[str, Latency]]) -> None:
    table = Table(title="added latency by transaction layout (the router's records, no work)")
    for column in ("layout", "rate (tasks/s)", "tasks", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    for name, lat in measured:
        row = (f"{lat.rate:,.0f}", str(lat.count), f"{lat.p50_ms:.0f}", f"{lat.p99_ms:.0f}")
        table.add_row(name, *row)
    for a, b in zip(measured[::2], measured[1::2], strict=True):
        one, split = (a[1], b[1]) if a[0] == LAYOUTS["one"] else (b[1], a[1])
        p50, p99 = split.p50_ms - one.p50_ms, split.p99_ms - one.p99_ms
        table.add_row("per partition − one (a round)", "", "", f"{p50:+.0f}", f"{p99:+.0f}")
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5700.0, help="paced tasks/s")
    parser.add_argument("--latency-seconds", type=float, default=8.0, help="paced run length")
    parser.add_argument("--batch", type=int, default=500, help="records per consume")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="each layout this many times, taking turns (the broker warms up)",
    )
    args = parser.parse_args()

    async def measure(stack: Stack) -> list[tuple[str, Latency]]:
        bench = Bench(stack, args.batch)
        count = paced_records(args.rate, args.latency_seconds)
        records = scored_records(count, args.seed, args.batch)
        measured = []
        for round_ in range(args.rounds):
            # Taking turns at going first: a broker that warmed up favours the second.
            turns = list(LAYOUTS.items())[:: -1 if round_ % 2 else 1]
            for layout, label in turns:
                pipeline = await bench.pipeline(layout, round_)
                latency = await stack.latency(
                    label, pipeline, records, args.rate, args.latency_seconds
                )
                measured.append((label, latency))
        return measured

    run: Callable[..., int] = partial(run_bench, f"the router's layout at {args.rate:,.0f}/s")
    return run(measure, report, rebalance_delay_ms=0)


if __name__ == "__main__":
    sys.exit(main())
