"""Throughput and latency of the router service with a large policy, against a raw Kafka relay.

    uv run python bench/router.py [--tasks 20000] [--batch 500] [--rules 50] [--replicas 2]

One run starts its own Kafka broker (free ports, a temporary folder), scores sample tasks with
the scoring service's model once, pre-loads the scored events into fresh topic prefixes, and
measures, one after the other so they never share the CPU: a raw aiokafka relay (scored →
routed, one record out per record in) in a process of its own; the real router service with a
policy of ``--rules`` rules on ``tumor_screening``; the relay again (its better rate is the one
compared against, as the broker is warmer for later phases); then the added latency of the
router and of each relay at half the router's one-process rate. The router writes automatic
decisions to ``decisions`` and review requests to ``routed`` (a QA-sampled decision to both),
so its rate counts distinct tasks reaching an output, like the relay's, and a task's latency
ends at its first output record. Rates and latencies come from broker log-append times; a rate
counts from the moment the consumer group was seen stable to the last output record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml
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
    best_of,
    committed_by,
    latencies,
    make_topics,
    produce,
    read_stamps,
    relay_ratios,
    relays,
    report_latencies,
    run_bench,
    scored_records,
    verdict,
)
from rich.console import Console
from rich.table import Table
from tandem_cli.dataset import CLINICS, TASK_TYPE, feature_names, feature_ranges, holdout_split
from tandem_cli.stack.services import ServiceSet
from tandem_policy.loader import load_policy
from tandem_shared.topics import Topics

AIM = 0.70  # of the relay's rate: routing should cost less than moving the bytes does
LOCAL_POLICY = Path(__file__).resolve().parents[1] / "deploy" / "local" / "policy.yaml"


def stamped(topics: Topics) -> tuple[str, ...]:
    return (topics.scored, topics.routed, topics.decisions)


# ---- the input: a policy of many rules -------------------------------------------------------


def _number(value: float) -> float:
    return float(f"{value:.4g}")


def _feature_rule(i: int, name: str) -> dict[str, Any]:
    """Alternately an alert on an extreme measurement (past the holdout's 0.1% tails: met by a
    task in a few hundred) and a bound on an implausible one (past the valid range: never met)."""
    column = holdout_split().features[:, feature_names().index(name)]
    low, high = feature_ranges()[name]
    span = high - low
    kind, op, value, route = [
        ("high", "gt", np.quantile(column, 0.999), "review"),
        ("implausibly_high", "ge", high + span, "escalate"),
        ("low", "lt", np.quantile(column, 0.001), "review"),
        ("implausibly_low", "le", low - span, "escalate"),
    ][i % 4]
    return {
        "reason": f"r{i:02d}_{name}_{kind}",
        "feature": name,
        "op": op,
        "value": _number(float(value)),
        "route": route,
    }


def _context_rule(i: int) -> dict[str, Any]:
    """Watch lists on the task's context: clinics that send no tasks, a few patients."""
    watched = [f"P-{10_000 + 4_421 * n}" for n in range(20)]
    op, key, value = [
        ("in", "clinic", ["harbour", "riverside", "mobile_unit"]),
        ("in", "patient_ref", watched),
        ("eq", "clinic", "pilot_site"),
        ("not_in", "clinic", list(CLINICS)),
    ][i // 5 % 4]
    return {"reason": f"r{i:02d}_{key}_watch", "context": key, "op": op, "value": value}


def rules(count: int) -> list[dict[str, Any]]:
    """``count`` rules, most of which a task rarely or never meets, as in a policy grown over
    time; one in five looks at the context, the others at features spread over all 30."""
    names = feature_names()
    return [
        _context_rule(i) if i % 5 == 4 else _feature_rule(i, names[(i * 7) % len(names)])
        for i in range(count)
    ]


def write_policy(folder: Path, count: int) -> Path:
    """The local policy with ``count`` rules on tumor screening, checked as the router will."""
    document = yaml.safe_load(LOCAL_POLICY.read_text())
    document["name"] = "bench"
    document["description"] = f"The local policy with {count} rules, for bench/router.py."
    document["task_types"][TASK_TYPE]["rules"] = rules(count)
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    load_policy(path)  # an invalid policy would only show as a router that never joins
    return path


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Mix:
    """Where the router sent the tasks, counted from its outputs."""

    tasks: int
    decided: int  # automatic decisions, QA samples included
    sampled: int  # automatic decisions also sent to review
    to_people: int
    lost: int  # reached neither output: dead-lettered or dropped

    def __str__(self) -> str:
        share = 100 / self.tasks
        return (
            f"{self.decided * share:.1f}% decided automatically "
            f"({self.sampled * share:.1f}% QA-sampled), {self.to_people * share:.1f}% to people"
            + (f", {self.lost} reached no output" if self.lost else "")
        )


@dataclass
class Result:
    rates: dict[str, Throughput]  # none when the latency phase ran alone
    mix: Mix | None
    service: str  # the router's row: its policy's size
    latencies: list[tuple[str, Latency]]


@dataclass
class Bench:
    args: argparse.Namespace
    stack: Stack
    records: list[Raw]
    policy: Path

    async def topics(self, what: str) -> Topics:
        return await make_topics(self.stack.bootstrap, self.stack.prefix(what), stamped)

    async def load(self, topics: Topics) -> None:
        await produce(self.stack.bootstrap, topics.scored, self.records, self.stack.progress)

    async def relay_throughput(self, client: str) -> Throughput:
        topics = await self.topics(f"relay-{len(self.stack.relays)}")
        await self.load(topics)
        return await self.stack.relay_rate(
            topics.scored, topics.routed, len(self.records), self.args.batch, client
        )

    def start_routers(self, topics: Topics, replicas: int = 1) -> tuple[str, list[ServiceSet]]:
        """``replicas`` router processes in one consumer group of their own, and the group."""
        group = f"bench-router-{uuid.uuid4().hex[:8]}"
        env = {
            "TANDEM_ROUTER_POLICY_FILE": str(self.policy),
            "TANDEM_ROUTER_GROUP_ID": group,
            "TANDEM_ROUTER_BATCH_MAX_RECORDS": str(self.args.batch),
        }
        return group, [
            self.stack.start_service("router", topics.prefix, env, f"{topics.prefix}{replica}")
            for replica in range(replicas)
        ]

    async def router_throughput(self, replicas: int) -> tuple[Throughput, Mix]:
        """``replicas`` router processes in one consumer group of their own."""
        topics = await self.topics(f"router-{replicas}")
        await self.load(topics)
        group, replica_sets = self.start_routers(topics, replicas)
        routers = [services.running[0].process for services in replica_sets]

        def stop() -> None:
            for services in replica_sets:
                services.stop()

        rate = await self.stack.drain(
            Drain(
                label=f"router x{replicas} ({self.args.rules} rules): routing",
                group=group,
                members=replicas,
                alive=lambda: all(router.alive() for router in routers),
                stop=stop,
                # A task may give one record or two, so the router's commits say when all are
                # handled: it commits a batch once the batch's outputs are acknowledged.
                counter=lambda: committed_by(self.stack.bootstrap, group, topics.scored),
                expected=len(self.records),
                outputs=(topics.routed, topics.decisions),
                pids=lambda: [router.pid for router in routers],
            )
        )
        return rate, await self.mix(topics)

    async def mix(self, topics: Topics) -> Mix:
        decided = set(await read_stamps(self.stack.bootstrap, topics.decisions))
        routed = set(await read_stamps(self.stack.bootstrap, topics.routed))
        return Mix(
            tasks=len(self.records),
            decided=len(decided),
            sampled=len(decided & routed),
            to_people=len(routed - decided),
            lost=len(self.records) - len(decided | routed),
        )

    async def pipeline(self, what: str) -> Pipeline:
        """The router (``what`` is "service") or a relay (a client in RELAYS) on new topics, for
        a latency phase: the router from scored to routed or decisions, whichever a task
        reaches first; a relay from scored to routed, one record out per record in."""
        topics = await self.topics(f"{what}-paced")
        if what in RELAYS:
            return self.stack.relay_pipeline(what, topics.scored, topics.routed, self.args.batch)

        async def start() -> Running:
            _, (services,) = self.start_routers(topics)
            await asyncio.to_thread(services.wait_ready, WAIT_S)
            return Running(services.running[0].process.alive, services.stop)

        return Pipeline(topics.scored, (topics.routed, topics.decisions), start)

    async def latencies(self, service: str, per_second: float) -> list[tuple[str, Latency]]:
        """The router's added latency, then each relay's, at the same rate."""
        return await latencies(
            self.stack,
            service,
            self.pipeline,
            partial(scored_records, seed=self.args.seed, batch=self.args.batch),
            per_second,
            self.args.latency_seconds,
        )


async def run(bench: Bench) -> Result:
    console = bench.stack.progress.console
    rules = bench.args.rules
    service = f"router service, {rules} rules"
    if bench.args.latency_rate:  # the latency phase alone, at the given rate
        return Result({}, None, service, await bench.latencies(service, bench.args.latency_rate))
    before = await relays(bench.relay_throughput, console)
    router, mix = await bench.router_throughput(1)
    console.print(f"router ({rules} rules): {router.tasks_per_s:,.0f} tasks/s; {mix}")
    rates = {service: router}
    if bench.args.replicas > 1:
        scaled, scaled_mix = await bench.router_throughput(bench.args.replicas)
        rates[f"router service, {rules} rules, {bench.args.replicas} processes"] = scaled
        console.print(
            f"router x{bench.args.replicas}: {scaled.tasks_per_s:,.0f} tasks/s; {scaled_mix}"
        )
    after = await relays(bench.relay_throughput, console)
    rates = {**best_of(before, after), **rates}
    return Result(rates, mix, service, await bench.latencies(service, router.tasks_per_s / 2))


def report(console: Console, result: Result) -> None:
    if result.rates:
        report_rates(console, result.rates, result.mix)
    report_latencies(console, result.latencies, result.service, "scored")


def report_rates(console: Console, rates: dict[str, Throughput], mix: Mix | None) -> None:
    table = Table(
        title="throughput (distinct tasks/s reaching an output, "
        "from the settled group to the last output record)",
        caption=f"router: {mix}",
    )
    for column in ("pipeline", "tasks/s", *RATIO_COLUMNS, "aim", "CPU µs/task", "cores busy"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    relay = rates[RELAY]
    for name, value in rates.items():
        ratio = value.tasks_per_s / relay.tasks_per_s
        aim = "" if name in RELAYS.values() else verdict(ratio >= AIM, f"≥ {AIM:.2f}")
        cpu = f"{value.cpu_us_per_task:,.0f}"
        busy = f"{value.cores_busy:.2f}"
        ratios = relay_ratios(value, rates)
        table.add_row(name, f"{value.tasks_per_s:,.0f}", *ratios, aim, cpu, busy)
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, batch_help="records per getmany (TANDEM_ROUTER_BATCH_MAX_RECORDS)")
    parser.add_argument("--rules", type=int, default=50, help="rules in the policy")
    add_latency_args(parser)
    parser.add_argument(
        "--replicas",
        type=int,
        default=os.cpu_count() or 1,
        help="router processes of the scaled run, one per core by default (1: no scaled run)",
    )
    args = parser.parse_args()
    if args.tasks <= WARMUP or args.batch < 1 or args.rules < 0:
        parser.error(f"--tasks must exceed {WARMUP}, --batch be at least 1, --rules not negative")

    async def measure(stack: Stack) -> Result:
        policy = write_policy(stack.home, args.rules)
        records = scored_records(args.tasks, args.seed, args.batch)
        return await run(Bench(args, stack, records, policy))

    return run_bench(f"drawing and scoring {args.tasks} tasks", measure, report)


if __name__ == "__main__":
    sys.exit(main())
