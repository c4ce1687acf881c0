"""The whole pipeline, end to end: all four services on one broker and one PostgreSQL server,
reviewers simulated for the share the router sends to people.

    uv run python bench/e2e.py [--tasks 10000] [--reviewers 20] [--shards 1]

One run starts its own Kafka broker and PostgreSQL server (free ports, a temporary folder) and:

1. draws ``--tasks`` sample tasks (``--seed``) and encodes them as producers send them; makes
   the topics of a fresh prefix (4 partitions; every timed topic stamped with the broker's
   append time) and loads the tasks on the submitted one;
2. makes a database for the review API and one per shard of the audit ledger (``--shards``),
   and starts scoring, the router, the review API and the audit sink, a process each, with
   their default settings (the router's default policy);
3. the tasks are loaded first, then the router, review API and audit sink started, scoring
   last: the clock starts as scoring's group forms, with the whole backlog before it (as
   producers that submitted a burst); meanwhile ``--reviewers`` clients, each a senior
   reviewer of their own (escalated and critical reviews need seniors, and two approvals two
   people), claim the most urgent review and decide it, asking again a second after an empty
   queue, until every task is decided;
4. the run ends when every task has a decision on the decisions topic and the audit sink has
   committed everything on every topic it records (so all of it is in the ledger).

It reports, per stage, when the stage's last task came out and the rate that makes from the
start, each stage's rate over the rate of the stage that feeds it (the lowest names what limits
the pipeline), and each service's CPU per task and its cores busy. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from aiokafka import AIOKafkaConsumer
from harness import (
    WAIT_S,
    Mark,
    Raw,
    Stack,
    cpu_seconds,
    draw_tasks,
    encode,
    make_topics,
    partitions,
    produce,
    read_stamps,
    run_bench,
    settled,
    tasks_on,
    wait_for,
)
from review_api import SmallPools
from rich.console import Console
from rich.table import Table
from tandem_shared.auth import mint_token
from tandem_shared.clients import aiokafka_reader
from tandem_shared.settings import RuntimeSettings
from tandem_shared.topics import Topics

SERVICES = ("scoring", "router", "review-api", "audit-sink")
OUTCOME = "benign"
EMPTY_QUEUE_PAUSE_S = 1.0  # as a console looks again; 20 clients asking every 50 ms took a core


def stamped(topics: Topics) -> tuple[str, ...]:
    return (topics.submitted, topics.scored, topics.routed, topics.decisions)


@dataclass(frozen=True)
class Stage:
    name: str
    service: str
    seconds: float  # from the start to its last task's record
    tasks: int
    half: float = float("nan")  # from the start to when half its tasks were out
    first: float = float("nan")  # from the start to its first task's record

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class Result:
    tasks: int
    reviewers: int
    shards: int
    stages: list[Stage]
    reviewed: int
    cpu_s: dict[str, float]
    seconds: float
    requests: int
    refused: int


async def reviewer(
    client: httpx.AsyncClient, api: str, token: str, finished: asyncio.Event, count: list[int]
) -> None:
    """Claim the most urgent review and decide it; an empty queue is asked again shortly, until
    the run says every task is decided. count: [requests, decided, unexpected answers]."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"outcome": OUTCOME, "rationale": "checked by the benchmark"}
    while not finished.is_set():
        claim = await client.post(f"{api}/v1/reviews/next", headers=headers)
        count[0] += 1
        if claim.status_code == 404:
            await asyncio.sleep(EMPTY_QUEUE_PAUSE_S)
            continue
        if claim.status_code != 200:
            count[2] += 1
            await asyncio.sleep(EMPTY_QUEUE_PAUSE_S)
            continue
        claimed = claim.json()
        review = f"{api}/v1/reviews/{claimed['review_id']}"
        if claimed["blind"]:  # the policy's blind reviews (QA samples, critical): a verdict first
            await client.post(f"{review}/first-look", headers=headers, json={"outcome": OUTCOME})
            count[0] += 1
        decided = await client.post(f"{review}/decision", headers=headers, json=body)
        count[0] += 1
        if decided.status_code == 200:
            count[1] += 1
        else:
            count[2] += 1


async def records_in(bootstrap: str, topics: Sequence[str]) -> int:
    """How many committed records the topics hold now (transactions' markers not counted)."""
    parts = [tp for topic in topics for tp in partitions(topic)]
    consumer = AIOKafkaConsumer(**aiokafka_reader(bootstrap))
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)  # the last stable offsets, reading committed
        count = 0
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=200, max_records=100_000)
            count += sum(len(records) for records in batches.values())
        return count
    finally:
        await consumer.stop()


async def ledger_size(client: httpx.AsyncClient, url: str) -> int:
    """The audit sink's tandem_audit_tree_size: entries in all shards, as it last saw them."""
    page = (await client.get(f"{url}/metrics")).text
    line = next(x for x in page.splitlines() if x.startswith("tandem_audit_tree_size "))
    return int(float(line.split()[1]))


async def measure(stack: Stack, args: argparse.Namespace) -> Result:
    bootstrap = stack.bootstrap
    tasks = draw_tasks(args.tasks, args.seed)
    records: list[Raw] = encode([(t.task_id, t) for t in tasks], "submitted")
    topics = await make_topics(bootstrap, stack.prefix("e2e"), stamped)
    database = await asyncio.to_thread(stack.start_postgres)
    review_url = await asyncio.to_thread(database.create_database, "review_api")
    ledger_urls = [
        await asyncio.to_thread(database.create_database, f"ledger_{k}") for k in range(args.shards)
    ]
    env = {
        "TANDEM_REVIEW_API_DATABASE_URL": review_url,
        "TANDEM_AUDIT_DATABASE_URL": ledger_urls[0],
        "TANDEM_AUDIT_SHARD_DATABASE_URLS": json.dumps(ledger_urls[1:]),
    }
    await produce(bootstrap, topics.submitted, records, stack.progress)
    # Scoring last: the others wait for work, and the clock starts as its group forms.
    later = stack.start_services(SERVICES[1:], topics.prefix, env, "e2e")
    await asyncio.to_thread(later.wait_ready, WAIT_S)
    first = stack.start_services(SERVICES[:1], topics.prefix, env, "e2e")
    running = [*first.running, *later.running]
    pids = {s.spec.name: s.process.pid for s in running}
    assert database.process is not None  # started above
    pids["PostgreSQL"] = database.process.pid

    def alive() -> bool:
        return all(s.process.alive() for s in running)

    def cpu() -> dict[str, float]:
        return {name: cpu_seconds(pid, children=name == "PostgreSQL") for name, pid in pids.items()}

    start = await settled(bootstrap, "tandem-scoring", 1, alive, [])
    cpu_before = cpu()
    finished = asyncio.Event()
    count = [0, 0, 0]
    settings = RuntimeSettings()
    api = later.get("review-api").url
    async with httpx.AsyncClient(transport=SmallPools(args.reviewers), timeout=60.0) as client:
        clients = [
            asyncio.create_task(
                reviewer(
                    client,
                    api,
                    mint_token(settings, f"reviewer-{n}", ["reviewer", "senior"]),
                    finished,
                    count,
                )
            )
            for n in range(args.reviewers)
        ]
        try:
            bar = stack.progress.add_task("decided", total=args.tasks)
            async with tasks_on(bootstrap, topics.decisions) as decided:
                await wait_for(decided, args.tasks, topics.decisions, stack.progress, bar, alive)
        finally:
            finished.set()
            await asyncio.gather(*clients, return_exceptions=True)
        # Everything the pipeline wrote is in now: the ledger holds each record once.
        recorded = await records_in(bootstrap, topics.audited())
        deadline = time.monotonic() + WAIT_S
        audit = later.get("audit-sink").url
        while await ledger_size(client, audit) < recorded:
            if time.monotonic() > deadline or not alive():
                raise TimeoutError(f"the ledger did not reach the {recorded} records written")
            await asyncio.sleep(0.1)
    end = Mark.now([])
    cpu_after = cpu()
    await asyncio.to_thread(first.stop)
    await asyncio.to_thread(later.stop)

    async def stage(name: str, service: str, *outputs: str) -> Stage:
        """When the stage's last task came out (its first record on any of the outputs)."""
        stamps = sorted((await read_stamps(bootstrap, *outputs)).values())
        since = [(stamp - start.epoch_ms) / 1000 for stamp in stamps]
        return Stage(name, service, since[-1], len(since), since[len(since) // 2], since[0])

    stages = [
        await stage("scored", "scoring", topics.scored),
        await stage("routed or decided by the model", "router", topics.routed, topics.decisions),
        await stage("decided (model and people)", "review-api", topics.decisions),
        Stage("in the ledger", "audit-sink", (end.epoch_ms - start.epoch_ms) / 1000, args.tasks),
    ]
    reviewed = len(await read_stamps(bootstrap, topics.routed))
    return Result(
        args.tasks,
        args.reviewers,
        args.shards,
        stages,
        reviewed,
        {name: cpu_after[name] - cpu_before[name] for name in pids},
        (end.epoch_ms - start.epoch_ms) / 1000,
        count[0],
        count[2],
    )


def report(console: Console, result: Result) -> None:
    table = Table(
        title=f"the pipeline end to end: {result.tasks:,} tasks, {result.reviewed:,} of them "
        f"reviewed by {result.reviewers} simulated reviewers; ledger in {result.shards} shard(s)"
    )
    columns = ("stage", "by", "first", "half", "last out at", "tasks/s from the start", "÷ before")
    for column in columns:
        table.add_column(column, justify="right" if column != "stage" else "left")
    before: float | None = None
    ratios: list[tuple[float, Stage]] = []
    for s in result.stages:
        ratio = s.rate / before if before else float("nan")
        if before:
            ratios.append((ratio, s))
        table.add_row(
            s.name,
            s.service,
            f"{s.first:.1f} s" if s.first == s.first else "",  # NaN: not timed per task
            f"{s.half:.1f} s" if s.half == s.half else "",
            f"{s.seconds:.1f} s",
            f"{s.rate:,.0f}",
            f"{ratio:.2f}" if before else "",
        )
        before = s.rate
    console.print(table)
    cpu = Table(title="CPU over the run")
    for column in ("process", "CPU s", "µs/task", "cores busy"):
        cpu.add_column(column, justify="right" if column != "process" else "left")
    for name, seconds in result.cpu_s.items():
        cpu.add_row(
            name,
            f"{seconds:.1f}",
            f"{seconds / result.tasks * 1e6:,.0f}",
            f"{seconds / result.seconds:.2f}",
        )
    console.print(cpu)
    limit = min(ratios, key=lambda r: r[0])[1] if ratios else result.stages[0]
    console.print(
        f"the limit: {limit.service} ({limit.name}); {result.requests:,} review API requests, "
        f"{result.refused} unexpected answers"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--reviewers", type=int, default=20)
    parser.add_argument("--shards", type=int, default=1, help="shards of the audit ledger")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    async def run(stack: Stack) -> Result:
        return await measure(stack, args)

    return run_bench(
        f"the pipeline end to end, {args.tasks:,} tasks", run, report, rebalance_delay_ms=0
    )


if __name__ == "__main__":
    raise SystemExit(main())
