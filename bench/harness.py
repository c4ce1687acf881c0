"""What the benchmarks share: a Kafka broker of their own, topics stamped by the broker, a raw
relay to compare a service against, and rates and added latencies read off the broker's
log-append times; and the processes of a run (services, a PostgreSQL server, others), each
stopped by its pid at the end.

Every Kafka figure comes from broker stamps (topics created with
``message.timestamp.type=LogAppendTime``), so all are read off one clock, and a rate counts
from the moment the consumer group was seen stable, so it never holds a group join.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table
from tandem_cli.dataset import sample_tasks
from tandem_cli.stack.kafka import KafkaBroker
from tandem_cli.stack.postgres import PostgresServer
from tandem_cli.stack.process import Process, free_port
from tandem_cli.stack.services import ServiceSet
from tandem_scoring.registry import ModelRegistry
from tandem_scoring.scorer import Rejection, Scorer
from tandem_scoring.settings import ScoringSettings
from tandem_shared import clients
from tandem_shared.clients import aiokafka_reader
from tandem_shared.envelope import Event
from tandem_shared.events import EventData, TaskScored, TaskSubmitted
from tandem_shared.kafka import Publisher, Record, make_producer
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics, ensure_topics

PARTITIONS = 4  # an even share for one or two replicas
LOG_APPEND_TIME = 1
WAIT_S = 180.0  # a phase that has not finished by then has failed
RELAY_GROUP = "bench-relay-"  # + the topic it relays
TICK = os.sysconf("SC_CLK_TCK")
Raw = tuple[bytes, bytes, list[tuple[str, bytes]]]
Rates = dict[str, "Throughput"]
Count = Callable[[], Awaitable[int]]
R = TypeVar("R")


def add_common_args(parser: argparse.ArgumentParser, batch_help: str) -> None:
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks pre-loaded per run")
    parser.add_argument("--batch", type=int, default=500, help=batch_help)
    parser.add_argument("--seed", type=int, default=1)


def draw_tasks(count: int, seed: int) -> list[TaskSubmitted]:
    return [TaskSubmitted.model_validate(body) for body, _ in sample_tasks(count, seed)]


def score(tasks: Sequence[TaskSubmitted], batch: int) -> list[TaskScored]:
    """The tasks as the scoring service would emit them: its model, its explanations."""
    settings = ScoringSettings()
    registry = ModelRegistry.load(settings.models_dir, settings.serve, settings.inference_threads)
    scorer = Scorer(registry)
    now = datetime.now(UTC)
    out = []
    for start in range(0, len(tasks), batch):
        chunk = tasks[start : start + batch]
        for task, result in zip(chunk, scorer.predict(chunk), strict=True):
            if isinstance(result, Rejection):
                raise RuntimeError(f"task {task.task_id} not scored: {result.reason}")
            out.append(
                TaskScored(task=task, score=result.to_score(), submitted_at=now, scored_at=now)
            )
    return out


def as_submitted(tasks: Sequence[TaskSubmitted]) -> list[Raw]:
    """The tasks as the records producers send (CloudEvents headers)."""
    return encode([(t.task_id, t) for t in tasks], "submitted")


def submitted_records(count: int, seed: int) -> list[Raw]:
    """``count`` distinct sample tasks as producers send them."""
    return as_submitted(draw_tasks(count, seed))


def scored_records(count: int, seed: int, batch: int) -> list[Raw]:
    """``count`` distinct sample tasks as the scoring service emits them."""
    scored = score(draw_tasks(count, seed), batch)
    return encode([(s.task.task_id, s) for s in scored], "scored")


# ---- topics and records ----------------------------------------------------------------------


async def make_topics(
    bootstrap: str, prefix: str, stamped: Callable[[Topics], Sequence[str]]
) -> Topics:
    """The prefix's topics; those ``stamped`` picks get the broker's append time."""
    topics = Topics(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        await admin.create_topics(
            [NewTopic(t, PARTITIONS, 1, topic_configs=config) for t in stamped(topics)]
        )
    finally:
        await admin.close()
    await ensure_topics(bootstrap, topics, PARTITIONS)
    return topics


def partitions(topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(PARTITIONS)]


async def read_stamps(bootstrap: str, *topics: str) -> dict[str, int]:
    """task id → log-append time (ms) of its first record on any of the topics."""
    # "earliest": a background reset racing the seek below must not skip to the end
    consumer = AIOKafkaConsumer(**aiokafka_reader(bootstrap))
    await consumer.start()
    try:
        parts = [tp for topic in topics for tp in partitions(topic)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        stamps: dict[str, int] = {}
        for tp in parts:
            while await consumer.position(tp) < ends[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=500, max_records=5000)).get(
                    tp, []
                ):
                    if record.timestamp_type != LOG_APPEND_TIME:
                        raise RuntimeError(f"{tp.topic} is not stamped with log-append time")
                    key = record.key.decode()
                    stamps[key] = min(stamps.get(key, record.timestamp), record.timestamp)
        return stamps
    finally:
        await consumer.stop()


def encode(events: Sequence[tuple[str, EventData]], stage: str) -> list[Raw]:
    """(task id, data) pairs as records keyed by task id, CloudEvents headers included."""
    out = []
    for task_id, data in events:
        event = Event.derived(data, source="tandem/bench", subject=task_id, stage=stage)
        out.append((task_id.encode(), event.value(), event.headers()))
    return out


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[Raw],
    progress: Progress,
    per_second: float | None = None,
) -> None:
    """Send at ``per_second`` (see _paced); without a rate, all at once in batches of a produce
    request per partition, as the services send, so the loading takes little of the CPU that
    the phase it feeds is measured on."""
    label = f"  paced at {per_second:,.0f}/s" if per_second else f"  loading {topic}"
    bar = progress.add_task(label, total=len(records))
    if per_second:
        sent = functools.partial(progress.update, bar)
        await _paced(bootstrap, topic, records, per_second, lambda done: sent(completed=done))
        return
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), client_id="tandem-bench")
    await producer.start()
    try:
        futures = []
        publisher = Publisher(producer)
        for start in range(0, len(records), 1000):
            chunk = records[start : start + 1000]
            sending = [Record(topic, key, value, list(headers)) for key, value, headers in chunk]
            futures.extend(await publisher.send_records(sending))
            progress.update(bar, completed=start + len(chunk))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _paced(
    bootstrap: str,
    topic: str,
    records: Sequence[Raw],
    per_second: float,
    sent_so_far: Callable[[int], None],
) -> None:
    """Send on a fixed schedule (every 5 ms, whatever is due), then wait for every ack. On
    librdkafka, whose threads do the sending: at 5,855 records/s the feeder took a tenth of a
    core against aiokafka's quarter, CPU the paced pipeline's latency is measured on."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": "tandem-bench",
            "acks": "all",
            "linger.ms": 1,
            "partitioner": "murmur2_random",  # where aiokafka would put each key
        }
    )
    began, sent = time.monotonic(), 0
    while sent < len(records):
        due = min(len(records), int((time.monotonic() - began) * per_second) + 1)
        for key, value, headers in records[sent:due]:
            producer.produce(topic, value, key, headers=cast(Any, headers))
        producer.poll(0)
        sent_so_far(due)
        sent = due
        await asyncio.sleep(0.005)
    left = await asyncio.to_thread(producer.flush, 30)
    if left:
        raise TimeoutError(f"{left} paced records to {topic} unacknowledged after 30 s")


# ---- CPU use: what a phase cost, whichever side of it ran out -----------------------------


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _ticks(fields: Sequence[str], exited_children: bool) -> int:
    times = [int(v) for v in fields[11:15]]  # utime, stime, cutime, cstime
    return sum(times if exited_children else times[:2])


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time the process used; with ``children``, its children's too, live or exited: how a
    PostgreSQL server's backends show."""
    used = _ticks(_stat(pid), exited_children=children)
    if children:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = _stat(int(entry.name))
            except OSError:  # gone since the listing
                continue
            if int(fields[1]) == pid:
                used += _ticks(fields, exited_children=False)
    return used / TICK


def machine_busy_seconds() -> float:
    """CPU time of all cores not idle: everything on the machine, other people's work included."""
    user, nice, system, _idle, _iowait, irq, softirq = map(
        int, Path("/proc/stat").read_text().split(maxsplit=8)[1:8]
    )
    return (user + nice + system + irq + softirq) / TICK


# ---- waiting and counting --------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """A moment of a phase: the wall clock (ms since the epoch), its processes' CPU seconds,
    the machine's busy seconds, and the monotonic clock."""

    epoch_ms: int
    cpu: float
    busy: float
    monotonic: float

    @classmethod
    def now(cls, pids: Sequence[int]) -> Mark:
        return cls(
            time.time_ns() // 1_000_000,
            sum(cpu_seconds(pid) for pid in pids),
            machine_busy_seconds(),
            time.monotonic(),
        )


async def settled(
    bootstrap: str, group: str, members: int, alive: Callable[[], bool], pids: Sequence[int]
) -> Mark:
    """Wait until the consumer group is stable with ``members`` members; the mark taken before
    the last look that found it not yet so. The members sit idle until it is, so their work
    starts after that mark, even when this process, starved of CPU by them, sees the group
    stable late. (The rate comes out at most a poll interval low.)"""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + WAIT_S
    before = Mark.now(pids)
    try:
        while time.monotonic() < deadline and alive():
            mark = Mark.now(pids)
            try:
                (response,) = await admin.describe_consumer_groups([group])
            except KafkaError:  # the group coordinator is not there yet on a new broker
                response = None
            if response is not None:
                _, _, state, _, _, joined, *_ = response.groups[0]
                if state == "Stable" and len(joined) == members:
                    return before
            before = mark
            await asyncio.sleep(0.05)
        raise TimeoutError(f"group {group} did not settle with {members} members")
    finally:
        await admin.close()


@asynccontextmanager
async def records_on(bootstrap: str, topic: str) -> AsyncIterator[Count]:
    """How many committed records the topic holds, read as they come: with transactions the
    end offsets count commit markers too, and would call a phase done before it is."""
    consumer = AIOKafkaConsumer(**aiokafka_reader(bootstrap))
    await consumer.start()
    consumer.assign(partitions(topic))
    await consumer.seek_to_beginning(*partitions(topic))
    seen = 0

    async def count() -> int:
        nonlocal seen
        batches = await consumer.getmany(timeout_ms=10, max_records=100_000)
        seen += sum(len(records) for records in batches.values())
        return seen

    try:
        yield count
    finally:
        await consumer.stop()


@asynccontextmanager
async def tasks_on(bootstrap: str, *topics: str) -> AsyncIterator[Count]:
    """How many distinct keys (task ids) the topics hold between them, read as they come: a
    task with records on two of them, or twice on one, counts once."""
    consumer = AIOKafkaConsumer(**aiokafka_reader(bootstrap))
    await consumer.start()
    parts = [tp for topic in topics for tp in partitions(topic)]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    seen: set[bytes] = set()

    async def count() -> int:
        batches = await consumer.getmany(timeout_ms=10, max_records=100_000)
        seen.update(record.key for records in batches.values() for record in records)
        return len(seen)

    try:
        yield count
    finally:
        await consumer.stop()


@asynccontextmanager
async def committed_by(bootstrap: str, group: str, topic: str) -> AsyncIterator[Count]:
    """How many records of the topic the group has committed: a service commits a batch once
    all its outputs are acknowledged, so this counts inputs fully handled, whatever they became."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    last = 0

    async def count() -> int:
        nonlocal last
        try:
            offsets = await admin.list_consumer_group_offsets(group, partitions=partitions(topic))
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # The group's coordinator is not there yet (a new broker makes the offsets topic
            # when a group first asks): nothing more committed than last seen.
            return last
        last = sum(max(meta.offset, 0) for meta in offsets.values())
        return last

    try:
        yield count
    finally:
        await admin.close()


async def wait_for(
    count: Count,
    expected: int,
    what: str,
    progress: Progress,
    bar: TaskID,
    alive: Callable[[], bool],
) -> None:
    """Until ``count`` reaches ``expected``; fails if the writer dies or time runs out."""
    deadline = time.monotonic() + WAIT_S
    while True:
        done = await count()
        progress.update(bar, completed=min(done, expected))
        if done >= expected:
            return
        if not alive():
            raise RuntimeError(f"the writer of {what} exited with {done}/{expected} written")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {done}/{expected} records after {WAIT_S:.0f}s")
        await asyncio.sleep(0.25)


async def wait_for_records(
    bootstrap: str,
    topic: str,
    expected: int,
    progress: Progress,
    bar: TaskID,
    alive: Callable[[], bool],
) -> None:
    """Until the topic holds ``expected`` records."""
    async with records_on(bootstrap, topic) as count:
        await wait_for(count, expected, topic, progress, bar, alive)


async def wait_for_tasks(
    bootstrap: str,
    topics: Sequence[str],
    expected: int,
    progress: Progress,
    bar: TaskID,
    alive: Callable[[], bool],
) -> None:
    """Until the topics hold records of ``expected`` distinct task ids between them."""
    async with tasks_on(bootstrap, *topics) as count:
        await wait_for(count, expected, ", ".join(topics), progress, bar, alive)


def rate(stamps: Sequence[int], since_ms: int) -> float:
    """Records per second appended from ``since_ms`` on, up to the last one."""
    counted = [s for s in stamps if s >= since_ms]
    last = max(counted, default=since_ms)
    if last == since_ms:
        return float("nan")
    return len(counted) / ((last - since_ms) / 1000)


# ---- the relay: the least any consumer-producer on this broker can do ------------------------


async def _relay(bootstrap: str, source: str, target: str, batch: int, ready: ProcessEvent) -> None:
    # Stops between batches, leaving the group cleanly, on SIGTERM or Ctrl-C.
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(
        source, **aiokafka_reader(bootstrap, group_id=RELAY_GROUP + source, client_id="bench-relay")
    )
    producer = make_producer(kafka, client_id="bench-relay")
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=batch)
            if consumer.assignment():
                ready.set()
            records = [r for part in batches.values() for r in part]
            if not records:
                continue
            futures = [
                await producer.send(target, r.value, key=r.key, headers=list(r.headers))
                for r in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit({tp: part[-1].offset + 1 for tp, part in batches.items() if part})
    finally:
        await consumer.stop()
        await producer.stop()


def _transactional_relay(
    bootstrap: str, source: str, target: str, batch: int, ready: ProcessEvent
) -> None:
    """The services' own way on librdkafka: a batch's records and its offsets in one
    transaction, with the same client settings (tandem_shared.clients)."""
    stop = False

    def stopping(*_: object) -> None:
        nonlocal stop
        stop = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopping)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    group = RELAY_GROUP + source
    consumer = Consumer(clients.transactional_consumer(kafka, group, "bench-relay"))
    producer = Producer(
        clients.transactional_producer(
            kafka, "bench-relay", clients.transactional_id(group, None), 10_000
        )
    )
    producer.init_transactions(30)
    consumer.subscribe([source], on_assign=lambda *_: ready.set())
    try:
        while not stop:
            first = consumer.poll(0.2)
            if first is None:
                continue
            messages = [first, *consumer.consume(batch - 1, 0)]
            messages = [m for m in messages if m.error() is None]
            last: dict[tuple[str, int], int] = {}
            for m in messages:
                last[(m.topic() or "", m.partition() or 0)] = m.offset() or 0
            offsets = [ConfluentPartition(t, p, o + 1) for (t, p), o in last.items()]
            # In the services' order (tandem_shared.loop): the offsets, then the records.
            producer.begin_transaction()
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
            for m in messages:
                producer.produce(target, m.value(), m.key(), headers=m.headers())
            producer.commit_transaction(30)
    finally:
        consumer.close()


RELAYS = {"aiokafka": "raw relay (aiokafka)", "librdkafka": "transactional relay (librdkafka)"}
RELAY = RELAYS["aiokafka"]  # the aims are against it: ratios to its rate, latency over its


def relay_main(
    client: str, bootstrap: str, source: str, target: str, batch: int, ready: ProcessEvent
) -> None:
    if client == "librdkafka":
        _transactional_relay(bootstrap, source, target, batch, ready)
    else:
        asyncio.run(_relay(bootstrap, source, target, batch, ready))


def stop_relay(proc: BaseProcess) -> None:
    if proc.is_alive():
        proc.terminate()  # by its pid; it leaves its group and exits
        proc.join(15)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


@dataclass
class Drain:
    """One measured phase: a consumer group working off a backlog loaded before it started."""

    label: str
    group: str
    members: int
    alive: Callable[[], bool]
    stop: Callable[[], None]
    counter: Callable[[], AbstractAsyncContextManager[Count]]  # reaches ``expected`` when done
    expected: int
    outputs: Sequence[str]  # where the tasks' records land, stamped by the broker
    pids: Callable[[], Sequence[int]]  # the processes doing the phase's work


async def relays(measure: Callable[[str], Awaitable[Throughput]], console: Console) -> Rates:
    """One drain by each relay (RELAYS), under its label."""
    rates: Rates = {}
    for client, label in RELAYS.items():
        rates[label] = await measure(client)
        console.print(f"{label}: {rates[label].tasks_per_s:,.0f} tasks/s")
    return rates


def best_of(*runs: Rates) -> Rates:
    """Each relay's better run: the broker's JVM warms up during the first phases, so relays
    run before and after the services, and a late run would flatter whatever it measured."""
    return {
        label: max((run[label] for run in runs), key=lambda t: t.tasks_per_s) for label in runs[0]
    }


def relay_ratios(value: Throughput, rates: Rates) -> list[str]:
    """``value``'s rate over each relay's, in the order of RELAYS."""
    return [f"{value.tasks_per_s / rates[label].tasks_per_s:.3g}" for label in RELAYS.values()]


RATIO_COLUMNS = ["÷ aiokafka relay", "÷ librdkafka relay"]


def verdict(met: bool, aim: str) -> str:
    """How a figure stands against the issue's aim, for the report's aim column."""
    return f"{aim}: {'met' if met else 'missed'}"


@dataclass(frozen=True)
class Throughput:
    """A drained backlog: tasks per second, and the CPU the phase's processes spent on each
    task (the broker's not included), which carries over between machines better than rates."""

    tasks_per_s: float
    cpu_us_per_task: float
    cores_busy: float = math.nan  # of the whole machine over the phase, the broker's included


# ---- added latency: a pipeline fed at a steady rate, and what it adds ------------------------

WARMUP = 50  # tasks sent before the paced run, to have connections and the group settled
# The paced run's first seconds are not counted: the broker (a JVM) and the process warm up
# at the new rate, and each pipeline starts on a topic of its own.
WARMUP_S = 2.0
LATENCY_SECONDS = 8.0  # the paced run's counted seconds, by default
LATENCY_AIM_MS = 50.0  # p99 added over the relay's at half the service's rate, with transactions


@dataclass
class Latency:
    """The added latency of a pipeline fed ``rate`` tasks/s, over the ``count`` tasks counted."""

    rate: float
    count: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Running:
    """A pipeline's processes, started and ready for their first record."""

    alive: Callable[[], bool]
    stop: Callable[[], None]  # stops them by their pids


@dataclass(frozen=True)
class Pipeline:
    """What a latency phase measures: a service or a relay that turns each record on ``source``
    into one or more on ``outputs``, keyed by the same task id (a task is out at its first
    record on any of them), and how to start it on those topics, all stamped by the broker."""

    source: str
    outputs: Sequence[str]
    start: Callable[[], Awaitable[Running]]


def paced_records(per_second: float, seconds: float) -> int:
    """The distinct tasks a latency phase sends: its warm-ups, and ``seconds`` counted."""
    return WARMUP + int(per_second * WARMUP_S) + max(1, int(per_second * seconds))


def added_latency(
    inputs: Mapping[str, int], outputs: Mapping[str, int], task_ids: Iterable[str]
) -> tuple[float, float]:
    """p50 and p99 (ms) over the tasks of their first output's log-append time less their
    input's, from stamps as ``read_stamps`` gives them (task id → first log-append time)."""
    added = [outputs[task_id] - inputs[task_id] for task_id in task_ids]
    p50, p99 = np.percentile(added, [50, 99])
    return float(p50), float(p99)


def add_latency_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--latency-seconds", type=float, default=LATENCY_SECONDS, help="paced run length"
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="measure only the added latency, at this many tasks/s "
        "(default: half the service's one-process rate)",
    )


async def latencies(
    stack: Stack,
    service: str,
    pipeline: Callable[[str], Awaitable[Pipeline]],
    make_records: Callable[[int], Sequence[Raw]],
    per_second: float,
    seconds: float,
) -> list[tuple[str, Latency]]:
    """The service's added latency, then each relay's (RELAYS), fed the same records at the same
    rate, each on topics of its own: ``pipeline`` makes them and says what runs on them, given
    "service" or a relay's client; ``make_records`` gives as many distinct tasks as asked for.
    Rows labelled ``service`` and as in RELAYS."""
    records = make_records(paced_records(per_second, seconds))
    measured = []
    for what, label in {"service": service, **RELAYS}.items():
        tested = await pipeline(what)
        measured.append((label, await stack.latency(what, tested, records, per_second, seconds)))
    return measured


def report_latencies(
    console: Console, latencies: Sequence[tuple[str, Latency]], service: str, source: str
) -> None:
    """The latencies' table, and the ``service`` row less the aiokafka relay's (RELAY) against
    the aim; ``source`` names the input topic the added latency counts from."""
    table = Table(title=f"added latency (output append time − {source} append time)")
    for column in ("pipeline", "rate (tasks/s)", "tasks", "p50 ms", "p99 ms", "aim"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    for name, lat in latencies:
        table.add_row(
            name, f"{lat.rate:,.0f}", str(lat.count), f"{lat.p50_ms:.0f}", f"{lat.p99_ms:.0f}", ""
        )
    by_name = dict(latencies)
    svc, rel = by_name[service], by_name[RELAY]
    added = svc.p99_ms - rel.p99_ms
    table.add_row(
        "service − relay",
        "",
        "",
        f"{svc.p50_ms - rel.p50_ms:+.0f}",
        f"{added:+.0f}",
        verdict(added < LATENCY_AIM_MS, f"p99 < {LATENCY_AIM_MS:.0f}"),
    )
    console.print(table)


# ---- one run: the broker's address, its folder, and every process started on it ---------------


@dataclass
class Stack:
    """A run's broker and folder, and every process started on them, to stop each at the end."""

    bootstrap: str
    home: Path
    progress: Progress
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    relays: list[BaseProcess] = field(default_factory=list)
    services: list[ServiceSet] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    databases: list[PostgresServer] = field(default_factory=list)

    def prefix(self, what: str) -> str:
        return f"bench.{self.run_id}.{what}."

    def start_relay(
        self, source: str, target: str, batch: int, client: str = "aiokafka"
    ) -> tuple[BaseProcess, ProcessEvent]:
        """A relay process on ``client`` (see RELAYS); the event is set once it has
        partitions assigned."""
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(
            target=relay_main,
            args=(client, self.bootstrap, source, target, batch, ready),
            daemon=True,
        )
        proc.start()
        self.relays.append(proc)
        return proc, ready

    def start_service(
        self, name: str, prefix: str, env: Mapping[str, str], logs: str
    ) -> ServiceSet:
        """The service as a process of its own, on a free port, logging under ``logs``."""
        return self.start_services((name,), prefix, env, logs)

    def start_services(
        self, names: Sequence[str], prefix: str, env: Mapping[str, str], logs: str
    ) -> ServiceSet:
        """The services, a process each, on free ports, logging under ``logs``."""
        ports = {name: free_port() for name in names}
        services = ServiceSet(self.home / logs, self.bootstrap, prefix, ports=ports, env=env)
        self.services.append(services)
        services.start(only=tuple(names))
        return services

    def start_process(self, name: str, argv: Sequence[str]) -> Process:
        """Any other process of the run, logging to ``logs/<name>.log``."""
        process = Process.start(name, argv, log=self.home / "logs" / f"{name}.log")
        self.processes.append(process)
        return process

    def start_postgres(self) -> PostgresServer:
        """A PostgreSQL server of the run's own, on a free port, its data in the run's folder."""
        self.home.chmod(0o711)  # the postgres user must reach its folder below this one
        server = PostgresServer(self.home / "postgres", free_port())
        self.databases.append(server)  # before starting, so a failed start is stopped too
        server.start()
        return server

    async def drain(self, phase: Drain) -> Throughput:
        """Tasks/s of the phase's group on its backlog, up to the last output record, and its
        processes' CPU time per task over the same span."""
        pids = phase.pids()
        start = await settled(self.bootstrap, phase.group, phase.members, phase.alive, pids)
        bar = self.progress.add_task(phase.label, total=phase.expected)
        async with phase.counter() as count:
            what = ", ".join(phase.outputs)
            await wait_for(count, phase.expected, what, self.progress, bar, phase.alive)
        end = Mark.now(pids)
        await asyncio.to_thread(phase.stop)
        stamps = await read_stamps(self.bootstrap, *phase.outputs)
        if min(stamps.values()) < start.epoch_ms:
            raise RuntimeError(f"{phase.label}: outputs appended before the group was stable")
        tasks_per_s = rate(list(stamps.values()), start.epoch_ms)
        busy = (end.busy - start.busy) / (end.monotonic - start.monotonic)
        return Throughput(tasks_per_s, (end.cpu - start.cpu) / phase.expected * 1e6, busy)

    async def relay_rate(
        self, source: str, target: str, expected: int, batch: int, client: str = "aiokafka"
    ) -> Throughput:
        """Tasks/s of a relay on ``client`` draining ``source``, loaded with ``expected``
        records."""
        proc, _ = self.start_relay(source, target, batch, client)
        return await self.drain(
            Drain(
                label="relay: relaying",
                group=RELAY_GROUP + source,
                members=1,
                alive=proc.is_alive,
                stop=lambda: stop_relay(proc),
                # One record out per record in, so the target's count says when it is done.
                counter=lambda: records_on(self.bootstrap, target),
                expected=expected,
                outputs=(target,),
                pids=lambda: [proc.pid] if proc.pid is not None else [],
            )
        )

    def relay_pipeline(self, client: str, source: str, target: str, batch: int) -> Pipeline:
        """A relay on ``client`` (see RELAYS) from ``source`` to ``target``, for ``latency``."""

        async def start() -> Running:
            proc, ready = self.start_relay(source, target, batch, client)
            await asyncio.to_thread(ready.wait, WAIT_S)
            return Running(proc.is_alive, lambda: stop_relay(proc))

        return Pipeline(source, (target,), start)

    async def latency(
        self,
        what: str,
        pipeline: Pipeline,
        records: Sequence[Raw],
        per_second: float,
        seconds: float,
    ) -> Latency:
        """p50 and p99 added latency of the pipeline, started on its (new) topics and fed
        ``records`` (keyed by task id, ``paced_records`` of them) at ``per_second``: WARMUP
        of them, waited for; then a paced stream whose first WARMUP_S are not counted, and
        ``seconds`` that are. A p99 needs them all: over fewer, a single pause of the broker
        is the p99."""
        paced_warmup = int(per_second * WARMUP_S)
        count = max(1, int(per_second * seconds))
        if len(records) < WARMUP + paced_warmup + count:
            raise ValueError(f"{what}: {len(records)} tasks are too few for the latency phase")
        warmup = records[:WARMUP]
        paced = records[WARMUP : WARMUP + paced_warmup + count]
        measured = paced[paced_warmup:]
        running = await pipeline.start()
        source, outputs = pipeline.source, pipeline.outputs
        bar = self.progress.add_task(f"{what}: warm-up", total=WARMUP)
        await produce(self.bootstrap, source, warmup, self.progress, per_second)
        await wait_for_tasks(self.bootstrap, outputs, WARMUP, self.progress, bar, running.alive)
        await produce(self.bootstrap, source, paced, self.progress, per_second)
        total = WARMUP + len(paced)
        bar = self.progress.add_task(f"{what}: draining", total=total)
        await wait_for_tasks(self.bootstrap, outputs, total, self.progress, bar, running.alive)
        await asyncio.to_thread(running.stop)
        inputs = await read_stamps(self.bootstrap, source)
        firsts = await read_stamps(self.bootstrap, *outputs)
        p50, p99 = added_latency(inputs, firsts, (key.decode() for key, _, _ in measured))
        return Latency(per_second, count, p50, p99)

    def stop(self) -> None:
        for proc in self.relays:
            stop_relay(proc)
        for services in self.services:
            services.stop()
        for process in self.processes:
            process.stop()
        for server in self.databases:  # last: the services may still be using it
            server.stop()


def run_bench(
    intro: str,
    measure: Callable[[Stack], Coroutine[Any, Any, R]],
    report: Callable[[Console, R], None],
    rebalance_delay_ms: int = 3000,
) -> int:
    """Start a broker in a temporary folder, measure, stop every process the run started (by
    its pid), report, and stop the broker; the folder (logs included) is kept on a failure.

    By default processes of one group started together join its first generation, as on a
    production broker (``group.initial.rebalance.delay.ms``): none works the backlog off alone
    while the others are still joining. A bench whose groups have one member each may do
    without the wait, which a join that comes during it makes longer by as much again."""
    # A SIGTERM unwinds like Ctrl-C, so the broker and the services are stopped either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    broker = KafkaBroker(
        home / "kafka", free_port(), free_port(), initial_rebalance_delay_ms=rebalance_delay_ms
    )
    finished = False
    try:
        with Progress(console=console, transient=True) as progress:
            console.print(f"{intro}; starting Kafka in {home}")
            broker.start()
            stack = Stack(broker.bootstrap_servers, home, progress)
            try:
                result = asyncio.run(measure(stack))
            finally:
                stack.stop()
        report(console, result)
        finished = True
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    finally:
        broker.stop()
        if finished:
            shutil.rmtree(home, ignore_errors=True)
        else:
            console.print(f"logs kept in {home}")
    return 0
