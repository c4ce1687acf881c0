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
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from harness import (
    RATIO_COLUMNS,
    RELAYS,
    WAIT_S,
    Drain,
    Raw,
    Stack,
    Throughput,
    add_common_args,
    best_of,
    draw_tasks,
    encode,
    make_topics,
    produce,
    read_stamps,
    records_on,
    relay_ratios,
    relays,
    run_bench,
    stop_relay,
    verdict,
    wait_for_records,
)
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from tandem_cli.stack.services import ServiceSet
from tandem_scoring.registry import ModelRegistry
from tandem_scoring.scorer import Scorer, prepare
from tandem_scoring.settings import ScoringSettings
from tandem_shared.events import TaskSubmitted
from tandem_shared.topics import Topics

WARMUP = 50  # tasks sent before the paced run, to have connections and the group settled
# The paced run's first seconds are not counted: the broker (a JVM) and the process warm up
# at the new rate, and each pipeline starts on a topic of its own.
WARMUP_S = 2.0
AIM = 0.60  # of the relay's rate, for the service's rows
LATENCY_AIM_MS = 50.0  # p99 added over the relay's at half the service's rate, with transactions
RELAY = RELAYS["aiokafka"]  # the aims are ratios to it
SERVICE = "scoring service"


@dataclass
class Latency:
    rate: float
    count: int
    p50_ms: float
    p99_ms: float


def stamped(topics: Topics) -> tuple[str, ...]:
    return (topics.submitted, topics.scored)


def records(tasks: Sequence[TaskSubmitted]) -> list[Raw]:
    return encode([(t.task_id, t) for t in tasks], "submitted")


@dataclass
class Bench:
    args: argparse.Namespace
    stack: Stack
    tasks: list[TaskSubmitted]

    @cached_property
    def backlog(self) -> list[Raw]:
        """The tasks as the records producers send (CloudEvents headers), encoded once."""
        return records(self.tasks)

    @property
    def bootstrap(self) -> str:
        return self.stack.bootstrap

    @property
    def progress(self) -> Progress:
        return self.stack.progress

    def start_service(self, topics: Topics, replicas: int = 1) -> list[ServiceSet]:
        """``replicas`` scoring processes in one consumer group of their own."""
        group = f"bench-scoring-{uuid.uuid4().hex[:8]}"
        env = {
            "TANDEM_SCORING_BATCH_MAX_RECORDS": str(self.args.batch),
            "TANDEM_SCORING_GROUP_ID": group,
        }
        return [
            self.stack.start_service("scoring", topics.prefix, env, f"{topics.prefix}{replica}")
            for replica in range(replicas)
        ]

    async def topics(self, what: str) -> Topics:
        return await make_topics(self.bootstrap, self.stack.prefix(what), stamped)

    async def load(self, topics: Topics) -> None:
        await produce(self.bootstrap, topics.submitted, self.backlog, self.progress)

    async def relay_throughput(self, client: str) -> Throughput:
        topics = await self.topics(f"relay-{len(self.stack.relays)}")
        await self.load(topics)
        return await self.stack.relay_rate(
            topics.submitted, topics.scored, len(self.tasks), self.args.batch, client
        )

    async def service_throughput(self, replicas: int) -> Throughput:
        topics = await self.topics(f"service-{replicas}")
        await self.load(topics)
        replica_sets = self.start_service(topics, replicas)

        def alive() -> bool:
            return all(s.running[0].process.alive() for s in replica_sets)

        def stop() -> None:
            for services in replica_sets:
                services.stop()

        return await self.stack.drain(
            Drain(
                label=f"scoring service x{replicas}: scoring",
                group=replica_sets[0].env["TANDEM_SCORING_GROUP_ID"],
                members=replicas,
                alive=alive,
                stop=stop,
                counter=lambda: records_on(self.bootstrap, topics.scored),
                expected=len(self.tasks),
                outputs=(topics.scored,),
                pids=lambda: [s.running[0].process.pid for s in replica_sets],
            )
        )

    async def latency(self, what: str, per_second: float) -> Latency:
        """p50 and p99 added latency of ``what`` (SERVICE, or a relay's client in RELAYS) fed
        at ``per_second``."""
        topics = await make_topics(self.bootstrap, self.stack.prefix(f"{what}-paced"), stamped)
        paced_warmup = min(int(per_second * WARMUP_S), (len(self.tasks) - WARMUP) // 2)
        count = max(
            1,
            min(
                int(per_second * self.args.latency_seconds),
                len(self.tasks) - WARMUP - paced_warmup,
            ),
        )
        warmup = records(self.tasks[:WARMUP])
        paced = records(self.tasks[WARMUP : WARMUP + paced_warmup + count])
        measured = paced[paced_warmup:]
        if what in RELAYS:
            proc, ready = self.stack.start_relay(
                topics.submitted, topics.scored, self.args.batch, what
            )
            alive: Callable[[], bool] = proc.is_alive
            await asyncio.to_thread(ready.wait, WAIT_S)
        else:
            (services,) = self.start_service(topics)
            alive = services.running[0].process.alive
            await asyncio.to_thread(services.wait_ready, WAIT_S)
        bar = self.progress.add_task(f"{what}: warm-up", total=WARMUP)
        await produce(self.bootstrap, topics.submitted, warmup, self.progress, per_second)
        await wait_for_records(self.bootstrap, topics.scored, WARMUP, self.progress, bar, alive)
        await produce(self.bootstrap, topics.submitted, paced, self.progress, per_second)
        total = WARMUP + len(paced)
        bar = self.progress.add_task(f"{what}: draining", total=total)
        await wait_for_records(self.bootstrap, topics.scored, total, self.progress, bar, alive)
        if what in RELAYS:
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


Rates = dict[str, Throughput]


async def run(bench: Bench) -> tuple[Rates, list[tuple[str, Latency]]]:
    console = bench.progress.console
    rates: Rates = {}
    if bench.args.latency_rate:  # the latency phase alone, at the given rate
        return rates, await latencies(bench, bench.args.latency_rate)
    before = await relays(bench.relay_throughput, console)
    rates.update(before)
    rates[SERVICE] = service = await bench.service_throughput(1)
    console.print(f"scoring service: {service.tasks_per_s:,.0f} tasks/s")
    if bench.args.replicas > 1:
        scaled = await bench.service_throughput(bench.args.replicas)
        rates[f"{SERVICE}, {bench.args.replicas} processes"] = scaled
        console.print(f"scoring service x{bench.args.replicas}: {scaled.tasks_per_s:,.0f} tasks/s")
    rates.update(best_of(before, await relays(bench.relay_throughput, console)))
    raw, full = onnx_rates(bench.tasks, bench.args.batch, bench.progress)
    # In-process calls, timed by the clock: their CPU is not what the column measures.
    rates["onnxruntime session.run"] = Throughput(raw, math.nan)
    rates["Scorer.predict (features + onnxruntime)"] = Throughput(full, math.nan)
    console.print(f"onnxruntime: {raw:,.0f} tasks/s; Scorer.predict: {full:,.0f} tasks/s")
    return rates, await latencies(bench, service.tasks_per_s / 2)


async def latencies(bench: Bench, per_second: float) -> list[tuple[str, Latency]]:
    """The service's added latency, then each relay's, at the same rate."""
    measured = [(SERVICE, await bench.latency("service", per_second))]
    for client, label in RELAYS.items():
        measured.append((label, await bench.latency(client, per_second)))
    return measured


def report(console: Console, rates: Rates, latencies: list[tuple[str, Latency]]) -> None:
    if rates:
        report_rates(console, rates)
    report_latencies(console, latencies)


def report_rates(console: Console, rates: Rates) -> None:
    table = Table(title="throughput (tasks/s, from the settled group to the last output record)")
    for column in ("pipeline", "tasks/s", *RATIO_COLUMNS, "aim", "CPU µs/task", "cores busy"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    relay = rates[RELAY].tasks_per_s
    for name, value in rates.items():
        cpu = "" if math.isnan(value.cpu_us_per_task) else f"{value.cpu_us_per_task:,.0f}"
        busy = "" if math.isnan(value.cores_busy) else f"{value.cores_busy:.2f}"
        ratio = value.tasks_per_s / relay
        aim = verdict(ratio >= AIM, f"≥ {AIM:.2f}") if name.startswith(SERVICE) else ""
        ratios = relay_ratios(value, rates)
        table.add_row(name, f"{value.tasks_per_s:,.0f}", *ratios, aim, cpu, busy)
    console.print(table)


def report_latencies(console: Console, latencies: list[tuple[str, Latency]]) -> None:
    table = Table(title="added latency (output append time − submitted append time)")
    for column in ("pipeline", "rate (tasks/s)", "tasks", "p50 ms", "p99 ms", "aim"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    for name, lat in latencies:
        table.add_row(
            name, f"{lat.rate:,.0f}", str(lat.count), f"{lat.p50_ms:.0f}", f"{lat.p99_ms:.0f}", ""
        )
    by_name = dict(latencies)
    svc, rel = by_name[SERVICE], by_name[RELAY]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, batch_help="records per getmany and inference")
    parser.add_argument("--latency-seconds", type=float, default=8.0, help="paced run length")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="measure only the added latency, at this many tasks/s (default: half the peak)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=os.cpu_count() or 1,
        help="scoring processes of the scaled run, one per core by default (1: no scaled run)",
    )
    args = parser.parse_args()
    if args.tasks <= WARMUP or args.batch < 1:
        parser.error(f"--tasks must exceed {WARMUP} and --batch be at least 1")

    async def measure(stack: Stack) -> tuple[Rates, list[tuple[str, Latency]]]:
        return await run(Bench(args, stack, draw_tasks(args.tasks, args.seed)))

    return run_bench(
        f"drawing {args.tasks} tasks", measure, lambda console, result: report(console, *result)
    )


if __name__ == "__main__":
    sys.exit(main())
