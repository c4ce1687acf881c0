"""Throughput and latency of the scoring service, against a raw Kafka relay and onnxruntime alone.

    uv run python bench/scoring.py [--tasks 20000] [--batch 500] [--replicas 2]

One run starts its own Kafka broker (free ports, a temporary folder), pre-loads the same sample
tasks into fresh topic prefixes, and measures, one after the other so they never share the CPU:
a raw aiokafka relay (getmany, produce unchanged with acks=all, commit after the acks) in a
process of its own; the real scoring service as one process, then as ``--replicas`` processes
in one group (one per core, as it is scaled); the relay again (its better rate is the one
compared against, as the broker is warmer for later phases); onnxruntime alone on the same
batches; then the added latency of the service and of the relay at half the service's peak rate.
Rates and latencies come from broker log-append times (the topics are created with
``message.timestamp.type=LogAppendTime``), so every figure is read off the same clock. A rate
counts from the moment the consumer group was seen stable to the last output record, so it
never holds a group join.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table
from tandem_cli.dataset import sample_tasks
from tandem_cli.publish import publish_tasks
from tandem_cli.stack.kafka import KafkaBroker
from tandem_cli.stack.process import free_port
from tandem_cli.stack.services import ServiceSet
from tandem_scoring.registry import ModelRegistry
from tandem_scoring.scorer import Scorer, prepare
from tandem_scoring.settings import ScoringSettings
from tandem_shared.envelope import Event
from tandem_shared.events import TaskSubmitted
from tandem_shared.kafka import make_consumer, make_producer
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics, ensure_topics

PARTITIONS = 4  # an even share for one or two replicas
LOG_APPEND_TIME = 1
WARMUP = 50  # tasks sent before the paced run, to have connections and the group settled
WAIT_S = 180.0  # a phase that has not finished by then has failed
RELAY_GROUP = "bench-relay-"  # + the topic it relays
Raw = tuple[bytes, bytes, list[tuple[str, bytes]]]


@dataclass
class Latency:
    rate: float
    count: int
    p50_ms: float
    p99_ms: float


# ---- topics and records ----------------------------------------------------------------------


async def make_topics(bootstrap: str, prefix: str) -> Topics:
    """The prefix's topics; submitted and scored stamped with the broker's append time."""
    topics = Topics(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        await admin.create_topics(
            [
                NewTopic(t, PARTITIONS, 1, topic_configs=config)
                for t in (topics.submitted, topics.scored)
            ]
        )
    finally:
        await admin.close()
    await ensure_topics(bootstrap, topics, PARTITIONS)
    return topics


def _partitions(topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(PARTITIONS)]


async def read_stamps(bootstrap: str, topic: str) -> dict[str, int]:
    """task id → log-append time (ms) of its first record on the topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = _partitions(topic)
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
                        raise RuntimeError(f"{topic} is not stamped with log-append time")
                    stamps.setdefault(record.key.decode(), record.timestamp)
        return stamps
    finally:
        await consumer.stop()


async def settled(bootstrap: str, group: str, members: int, alive: Callable[[], bool]) -> int:
    """Wait until the consumer group is stable with ``members`` members; the time it was seen
    so (ms since the epoch), from when throughput is counted, so no figure holds a rebalance."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline and alive():
            try:
                (response,) = await admin.describe_consumer_groups([group])
            except KafkaError:  # the group coordinator is not there yet on a new broker
                response = None
            if response is not None:
                _, _, state, _, _, joined, *_ = response.groups[0]
                if state == "Stable" and len(joined) == members:
                    return time.time_ns() // 1_000_000
            await asyncio.sleep(0.05)
        raise TimeoutError(f"group {group} did not settle with {members} members")
    finally:
        await admin.close()


async def wait_for(
    bootstrap: str,
    topic: str,
    expected: int,
    progress: Progress,
    bar: TaskID,
    alive: Callable[[], bool],
) -> None:
    """Until the topic holds ``expected`` records; fails if the writer dies or time runs out."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    deadline = time.monotonic() + WAIT_S
    try:
        while True:
            count = sum((await consumer.end_offsets(_partitions(topic))).values())
            progress.update(bar, completed=min(count, expected))
            if count >= expected:
                return
            if not alive():
                raise RuntimeError(f"the writer of {topic} exited with {count}/{expected} written")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {count}/{expected} records after {WAIT_S:.0f}s")
            await asyncio.sleep(0.25)
    finally:
        await consumer.stop()


def rate(stamps: Sequence[int], since_ms: int) -> float:
    """Records per second appended after ``since_ms``, up to the last one."""
    counted = [s for s in stamps if s > since_ms]
    last = max(counted, default=since_ms)
    if last == since_ms:
        return float("nan")
    return len(counted) / ((last - since_ms) / 1000)


def encode(tasks: Sequence[TaskSubmitted]) -> list[Raw]:
    out = []
    for task in tasks:
        event = Event.derived(task, source="tandem/bench", subject=task.task_id, stage="submitted")
        out.append((task.task_id.encode(), event.value(), event.headers()))
    return out


async def paced(
    bootstrap: str, topic: str, records: Sequence[Raw], per_second: float, progress: Progress
) -> None:
    """Send on a fixed schedule (every 5 ms, whatever is due), then wait for every ack."""
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), client_id="tandem-bench")
    await producer.start()
    bar = progress.add_task(f"  paced at {per_second:,.0f}/s", total=len(records))
    try:
        futures = []
        start, sent = time.monotonic(), 0
        while sent < len(records):
            due = min(len(records), int((time.monotonic() - start) * per_second) + 1)
            for key, value, headers in records[sent:due]:
                futures.append(await producer.send(topic, value, key=key, headers=headers))
            progress.update(bar, completed=due)
            sent = due
            await asyncio.sleep(0.005)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# ---- the relay: the least any consumer-producer on this broker can do ------------------------


async def _relay(bootstrap: str, source: str, target: str, batch: int, ready: ProcessEvent) -> None:
    # Stops between batches, leaving the group cleanly, on SIGTERM or Ctrl-C.
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    consumer = make_consumer(kafka, RELAY_GROUP + source, [source], "bench-relay")
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


def stop_relay(proc: Any) -> None:
    if proc.is_alive():
        proc.terminate()  # by its pid; it leaves its group and exits
        proc.join(15)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def relay_main(bootstrap: str, source: str, target: str, batch: int, ready: ProcessEvent) -> None:
    asyncio.run(_relay(bootstrap, source, target, batch, ready))


@dataclass
class Bench:
    args: argparse.Namespace
    bootstrap: str
    home: Path
    progress: Progress
    tasks: list[TaskSubmitted]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    relays: list[Any] = field(default_factory=list)
    services: list[ServiceSet] = field(default_factory=list)

    def prefix(self, what: str) -> str:
        return f"bench.{self.run_id}.{what}."

    def start_relay(self, topics: Topics) -> tuple[Any, ProcessEvent]:
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(
            target=relay_main,
            args=(self.bootstrap, topics.submitted, topics.scored, self.args.batch, ready),
            daemon=True,
        )
        proc.start()
        self.relays.append(proc)
        return proc, ready

    def start_service(self, topics: Topics, replicas: int = 1) -> list[ServiceSet]:
        """``replicas`` scoring processes in one consumer group of their own."""
        group = f"bench-scoring-{uuid.uuid4().hex[:8]}"
        started = []
        for replica in range(replicas):
            services = ServiceSet(
                self.home / f"{topics.prefix}{replica}",
                self.bootstrap,
                topics.prefix,
                ports={"scoring": free_port()},
                env={
                    "TANDEM_SCORING_BATCH_MAX_RECORDS": str(self.args.batch),
                    "TANDEM_SCORING_GROUP_ID": group,
                },
            )
            self.services.append(services)
            services.start(only=("scoring",))
            started.append(services)
        return started

    async def preload(self, what: str) -> Topics:
        topics = await make_topics(self.bootstrap, self.prefix(what))
        kafka = KafkaSettings(bootstrap_servers=self.bootstrap, topic_prefix=topics.prefix)
        await publish_tasks(kafka, self.tasks, self.progress)
        return topics

    async def relay_throughput(self) -> float:
        topics = await self.preload(f"relay-{len(self.relays)}")
        proc, _ = self.start_relay(topics)
        since_ms = await settled(self.bootstrap, RELAY_GROUP + topics.submitted, 1, proc.is_alive)
        bar = self.progress.add_task("relay: relaying", total=len(self.tasks))
        await wait_for(
            self.bootstrap, topics.scored, len(self.tasks), self.progress, bar, proc.is_alive
        )
        await asyncio.to_thread(stop_relay, proc)
        return rate(list((await read_stamps(self.bootstrap, topics.scored)).values()), since_ms)

    async def service_throughput(self, replicas: int) -> float:
        topics = await self.preload(f"service-{replicas}")
        replica_sets = self.start_service(topics, replicas)

        def alive() -> bool:
            return all(s.running[0].process.alive() for s in replica_sets)

        group = replica_sets[0].env["TANDEM_SCORING_GROUP_ID"]
        since_ms = await settled(self.bootstrap, group, replicas, alive)
        bar = self.progress.add_task(f"scoring service x{replicas}: scoring", total=len(self.tasks))
        await wait_for(self.bootstrap, topics.scored, len(self.tasks), self.progress, bar, alive)
        for services in replica_sets:
            await asyncio.to_thread(services.stop)
        return rate(list((await read_stamps(self.bootstrap, topics.scored)).values()), since_ms)

    async def latency(self, what: str, per_second: float) -> Latency:
        topics = await make_topics(self.bootstrap, self.prefix(f"{what}-paced"))
        count = max(1, min(int(per_second * self.args.latency_seconds), len(self.tasks) - WARMUP))
        warmup, measured = encode(self.tasks[:WARMUP]), encode(self.tasks[WARMUP : WARMUP + count])
        if what == "relay":
            proc, ready = self.start_relay(topics)
            alive: Callable[[], bool] = proc.is_alive
            await asyncio.to_thread(ready.wait, WAIT_S)
        else:
            (services,) = self.start_service(topics)
            alive = services.running[0].process.alive
            await asyncio.to_thread(services.wait_ready, WAIT_S)
        bar = self.progress.add_task(f"{what}: warm-up", total=WARMUP)
        await paced(self.bootstrap, topics.submitted, warmup, per_second, self.progress)
        await wait_for(self.bootstrap, topics.scored, WARMUP, self.progress, bar, alive)
        await paced(self.bootstrap, topics.submitted, measured, per_second, self.progress)
        bar = self.progress.add_task(f"{what}: draining", total=WARMUP + count)
        await wait_for(self.bootstrap, topics.scored, WARMUP + count, self.progress, bar, alive)
        if what == "relay":
            await asyncio.to_thread(stop_relay, proc)
        else:
            await asyncio.to_thread(services.stop)
        submitted = await read_stamps(self.bootstrap, topics.submitted)
        scored = await read_stamps(self.bootstrap, topics.scored)
        added = [scored[k.decode()] - submitted[k.decode()] for k, _, _ in measured]
        p50, p99 = np.percentile(added, [50, 99])
        return Latency(per_second, count, float(p50), float(p99))


def onnx_rates(
    tasks: Sequence[TaskSubmitted], batch: int, progress: Progress
) -> tuple[float, float]:
    """Tasks/s of onnxruntime alone on ready float32 batches, and of Scorer.predict (features
    checked and laid out, then the same call), with the service's model and thread settings."""
    settings = ScoringSettings()
    registry = ModelRegistry.load(settings.models_dir, settings.serve, settings.inference_threads)
    model = registry.get("tumor_screening")
    if model is None:
        raise RuntimeError("no model serves tumor_screening")
    manifest, session = model.manifest, model.session
    chunks = [tasks[i : i + batch] for i in range(0, len(tasks), batch)]
    matrices = [
        np.array([prepare(manifest, t.features)[0] for t in chunk], dtype=np.float32)
        for chunk in chunks
    ]
    outputs = [manifest.tensors.label, manifest.tensors.probabilities]
    scorer = Scorer(registry)

    def timed(name: str, items: Sequence[Any], call: Callable[[Any], object]) -> float:
        bar = progress.add_task(name, total=None)
        passes, start = 0, time.perf_counter()
        # About a second of work: a tiny model needs many passes to be measured at all.
        while passes < 10_000 and (passes == 0 or time.perf_counter() - start < 1.0):
            for item in items:
                call(item)
            passes += 1
            progress.update(bar, completed=passes * len(tasks))
        return passes * len(tasks) / (time.perf_counter() - start)

    raw = timed(
        "onnxruntime: session.run",
        matrices,
        lambda m: session.run(outputs, {manifest.tensors.input: m}),
    )
    full = timed("onnxruntime: Scorer.predict", chunks, scorer.predict)
    return raw, full


# ---- the run ---------------------------------------------------------------------------------


async def run(bench: Bench) -> tuple[dict[str, float], list[tuple[str, Latency]]]:
    console = bench.progress.console
    rates: dict[str, float] = {}
    # The relay runs before and after the service and its better rate counts: the broker's
    # JVM warms up during the first phases, which would otherwise flatter whatever runs later.
    before = await bench.relay_throughput()
    console.print(f"relay: {before:,.0f} tasks/s")
    rates["raw relay (aiokafka)"] = before
    rates["scoring service"] = service = await bench.service_throughput(1)
    console.print(f"scoring service: {service:,.0f} tasks/s")
    if bench.args.replicas > 1:
        scaled = await bench.service_throughput(bench.args.replicas)
        rates[f"scoring service, {bench.args.replicas} processes"] = scaled
        console.print(f"scoring service x{bench.args.replicas}: {scaled:,.0f} tasks/s")
    after = await bench.relay_throughput()
    console.print(f"relay again: {after:,.0f} tasks/s")
    rates["raw relay (aiokafka)"] = max(before, after)
    raw, full = onnx_rates(bench.tasks, bench.args.batch, bench.progress)
    rates["onnxruntime session.run"] = raw
    rates["Scorer.predict (features + onnxruntime)"] = full
    console.print(f"onnxruntime: {raw:,.0f} tasks/s; Scorer.predict: {full:,.0f} tasks/s")
    half = service / 2
    latencies = [
        ("scoring service", await bench.latency("service", half)),
        ("raw relay (aiokafka)", await bench.latency("relay", half)),
    ]
    return rates, latencies


def report(console: Console, rates: dict[str, float], latencies: list[tuple[str, Latency]]) -> None:
    table = Table(title="throughput (tasks/s, from the settled group to the last output record)")
    table.add_column("pipeline")
    table.add_column("tasks/s", justify="right")
    table.add_column("÷ raw relay", justify="right")
    relay = rates["raw relay (aiokafka)"]
    for name, value in rates.items():
        table.add_row(name, f"{value:,.0f}", f"{value / relay:.3g}")
    console.print(table)
    table = Table(title="added latency (output append time − submitted append time)")
    for column in ("pipeline", "rate (tasks/s)", "tasks", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    for name, lat in latencies:
        table.add_row(
            name, f"{lat.rate:,.0f}", str(lat.count), f"{lat.p50_ms:.0f}", f"{lat.p99_ms:.0f}"
        )
    (_, svc), (_, rel) = latencies
    table.add_row(
        "service − relay",
        "",
        "",
        f"{svc.p50_ms - rel.p50_ms:+.0f}",
        f"{svc.p99_ms - rel.p99_ms:+.0f}",
    )
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks pre-loaded per run")
    parser.add_argument("--batch", type=int, default=500, help="records per getmany and inference")
    parser.add_argument("--latency-seconds", type=float, default=8.0, help="paced run length")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--replicas",
        type=int,
        default=os.cpu_count() or 1,
        help="scoring processes of the scaled run, one per core by default (1: no scaled run)",
    )
    args = parser.parse_args()
    if args.tasks <= WARMUP or args.batch < 1:
        parser.error(f"--tasks must exceed {WARMUP} and --batch be at least 1")
    # A SIGTERM unwinds like Ctrl-C, so the broker and the services are stopped either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    broker = KafkaBroker(home / "kafka", free_port(), free_port())
    finished = False
    try:
        with Progress(console=console, transient=True) as progress:
            console.print(f"drawing {args.tasks} tasks; starting Kafka in {home}")
            tasks = [
                TaskSubmitted.model_validate(b) for b, _ in sample_tasks(args.tasks, args.seed)
            ]
            broker.start()
            bench = Bench(args, broker.bootstrap_servers, home, progress, tasks)
            try:
                rates, latencies = asyncio.run(run(bench))
            finally:
                for proc in bench.relays:
                    stop_relay(proc)
                for services in bench.services:
                    services.stop()
        report(console, rates, latencies)
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


if __name__ == "__main__":
    sys.exit(main())
