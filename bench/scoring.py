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
from functools import cached_property, partial
from typing import Any

import numpy as np
from harness import (
    RATIO_COLUMNS,
    RELAY,
    RELAYS,
    WAIT_S,
    WARMUP,
    Drain,
    Latency,
    Pipeline,
    Raw,
    Running,
    Stack,
    Throughput,
    add_common_args,
    add_latency_args,
    as_submitted,
    best_of,
    draw_tasks,
    latencies,
    make_topics,
    produce,
    records_on,
    relay_ratios,
    relays,
    report_latencies,
    run_bench,
    submitted_records,
    verdict,
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

AIM = 0.60  # of the relay's rate, for the service's rows
SERVICE = "scoring service"


def stamped(topics: Topics) -> tuple[str, ...]:
    return (topics.submitted, topics.scored)


@dataclass
class Bench:
    args: argparse.Namespace
    stack: Stack
    tasks: list[TaskSubmitted]

    @cached_property
    def backlog(self) -> list[Raw]:
        """The tasks as the records producers send (CloudEvents headers), encoded once."""
        return as_submitted(self.tasks)

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

    async def pipeline(self, what: str) -> Pipeline:
        """The service (``what`` is "service") or a relay (a client in RELAYS) on new topics,
        for a latency phase: submitted → scored."""
        topics = await self.topics(f"{what}-paced")
        if what in RELAYS:
            return self.stack.relay_pipeline(what, topics.submitted, topics.scored, self.args.batch)

        async def start() -> Running:
            (services,) = self.start_service(topics)
            await asyncio.to_thread(services.wait_ready, WAIT_S)
            return Running(services.running[0].process.alive, services.stop)

        return Pipeline(topics.submitted, (topics.scored,), start)

    async def latencies(self, per_second: float) -> list[tuple[str, Latency]]:
        """The service's added latency, then each relay's, at the same rate."""
        return await latencies(
            self.stack,
            SERVICE,
            self.pipeline,
            partial(submitted_records, seed=self.args.seed),
            per_second,
            self.args.latency_seconds,
        )


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
        return rates, await bench.latencies(bench.args.latency_rate)
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
    return rates, await bench.latencies(service.tasks_per_s / 2)


def report(console: Console, rates: Rates, latencies: list[tuple[str, Latency]]) -> None:
    if rates:
        report_rates(console, rates)
    report_latencies(console, latencies, SERVICE, "submitted")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, batch_help="records per getmany and inference")
    add_latency_args(parser)
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
