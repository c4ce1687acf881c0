"""Reviewers claiming and deciding at once on the review API with PostgreSQL, against a bare
uvicorn endpoint under the same clients.

    uv run python bench/review_api.py [--tasks 5000] [--reviewers 50]

One run starts its own Kafka broker and PostgreSQL server (free ports, a temporary folder) and:
draws and scores ``--tasks`` sample tasks with the scoring service's model; sends ``2 × --tasks``
requests from ``--reviewers`` clients to a bare FastAPI endpoint (bench/bare_app.py, a process
of its own); pre-loads the tasks as review requests on the ``routed`` topic of a fresh prefix,
starts the real review API on a database of its own and waits until its consumer group has
committed all of them (it commits a batch once the batch is in the database). Then each
reviewer loops: claim the most urgent review (POST /v1/reviews/next; a 404 says the queue is
empty and the reviewer stops), decide it. One operation is one HTTP request; every request goes
through one httpx client in this process, with a connection for each client (see SmallPools).
Last, the decisions topic is read to check that every task was decided exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from harness import (
    WAIT_S,
    Raw,
    Stack,
    committed_by,
    cpu_seconds,
    draw_tasks,
    encode,
    machine_busy_seconds,
    make_topics,
    produce,
    read_stamps,
    records_on,
    run_bench,
    score,
    wait_for,
)
from rich.console import Console
from rich.table import Table
from tandem_cli.stack.process import Process, free_port, port_open, wait_until
from tandem_shared.auth import mint_token
from tandem_shared.events import PolicyRef, TaskRouted, TaskScored
from tandem_shared.settings import RuntimeSettings
from tandem_shared.topics import Topics

CLAIM, DECIDE, BARE = "claim-next", "decide", "bare endpoint"
API = "review API, both"
CLIENT, SERVER, DATABASE, MACHINE = "client", "server", "PostgreSQL", "machine"
SERVER_SIDE = (SERVER, DATABASE)
GROUP = "bench-review-api"
OUTCOME = "benign"  # one of tumor screening's outcomes; which one does not change the work
DUE = timedelta(hours=4)  # far enough that no review turns overdue during the run
SCORE_BATCH = 500
MAX_MISSES = 20  # unexpected answers in a row before a client gives up: the server is broken
POOL = 5  # connections per httpcore pool (see SmallPools)
HERE = Path(__file__).resolve().parent
# uvicorn's defaults otherwise, as the services run it (no access log either).
BARE_SERVER = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(HERE)]
BARE_SERVER += ["--host", "127.0.0.1", "--no-access-log"]


def stamped(topics: Topics) -> tuple[str, ...]:
    return (topics.routed, topics.decisions)


# ---- the input: review requests that one approval decides ------------------------------------


def to_review(scored: TaskScored, now: datetime) -> TaskRouted:
    """Routed for review, not a QA sample, one approval: each ends in exactly one decision."""
    return TaskRouted(
        task=scored.task,
        score=scored.score,
        route="review",
        reasons=["low_confidence"],
        policy=PolicyRef(name="bench", version=1),
        outcomes=sorted(scored.score.probabilities),
        review_priority=scored.task.priority,  # the sample's spread, so the ordering has work
        due_at=now + DUE,
        submitted_at=scored.submitted_at,
        routed_at=now,
    )


def review_requests(tasks: int, seed: int) -> list[Raw]:
    now = datetime.now(UTC)
    scored = score(draw_tasks(tasks, seed), SCORE_BATCH)
    return encode([(s.task.task_id, to_review(s, now)) for s in scored], "routed")


# ---- the clients -----------------------------------------------------------------------------


class SmallPools(httpx.AsyncBaseTransport):
    """The client's connections, spread over pools of ``POOL``; each request goes to the least
    busy pool, so no request waits while the whole holds a free connection. httpcore's pool
    spends time quadratic in its connections on every request: with all 50 in one pool, the
    client itself spent about 2.5 ms of CPU a request (0.5 ms in pools of 5) and was what
    bounded the bare endpoint's rate."""

    def __init__(self, connections: int) -> None:
        limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
        count = -(-connections // POOL)
        self.pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(count)]
        self.busy = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = min(range(len(self.pools)), key=self.busy.__getitem__)
        self.busy[pool] += 1
        try:
            # Read to the end here, so the connection is back in its pool when the count drops.
            response = await self.pools[pool].handle_async_request(request)
            content = b"".join([part async for part in response.aiter_raw()])
            await response.aclose()
        finally:
            self.busy[pool] -= 1
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=content,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


@dataclass
class Calls:
    """What the clients of one phase saw."""

    seconds: float = 0.0
    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unexpected: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_message: dict[tuple[str, str], str] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)  # CPU used over the phase, in cores

    @property
    def answered(self) -> int:
        return sum(map(len, self.latencies.values()))

    def rate(self) -> float:
        return self.answered / self.seconds

    def server_ms(self) -> float:
        """The server's CPU time per answered request, its database's included."""
        cores = sum(v for k, v in self.cores.items() if k in SERVER_SIDE)
        return cores * self.seconds / self.answered * 1000

    def miss(self, op: str, status: str, message: str) -> None:
        self.unexpected[op, status] += 1
        self.first_message.setdefault((op, status), message[:300])


async def timed(
    calls: Calls, op: str, request: Awaitable[httpx.Response], expected: Collection[int]
) -> httpx.Response | None:
    """The answer, its latency recorded under ``op``; None for a request that failed or an
    answer not ``expected``, each recorded with its message."""
    start = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError as exc:
        calls.miss(op, type(exc).__name__, str(exc) or repr(exc))
        return None
    calls.latencies[op].append(time.perf_counter() - start)
    if response.status_code not in expected:
        calls.miss(op, str(response.status_code), response.text)
        return None
    return response


async def reviewer(
    client: httpx.AsyncClient, api: str, token: str, calls: Calls, done: Callable[[], None]
) -> None:
    """Claim the most urgent review and decide it, until the queue is empty."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"outcome": OUTCOME, "rationale": "checked by the benchmark"}
    misses = 0
    while misses < MAX_MISSES:
        claim = await timed(
            calls, CLAIM, client.post(f"{api}/v1/reviews/next", headers=headers), (200, 404)
        )
        if claim is not None and claim.status_code == 404:
            return
        decision = None
        if claim is not None:
            url = f"{api}/v1/reviews/{claim.json()['review_id']}/decision"
            decision = await timed(
                calls, DECIDE, client.post(url, headers=headers, json=body), (200,)
            )
        if decision is None:
            misses += 1
            continue
        misses = 0
        done()


async def bare_client(
    client: httpx.AsyncClient,
    url: str,
    requests: Iterator[int],
    calls: Calls,
    done: Callable[[], None],
) -> None:
    """Post to the bare endpoint while the shared ``requests`` last."""
    for _ in requests:
        if await timed(calls, BARE, client.post(url), (200,)) is not None:
            done()


async def run_clients(
    calls: Calls, clients: Sequence[Awaitable[None]], watched: Mapping[str, Callable[[], float]]
) -> None:
    """Run the clients at once; the phase's wall time, and the cores each watched CPU-time
    reading grew by over it."""
    before = {name: read() for name, read in watched.items()}
    start = time.perf_counter()
    await asyncio.gather(*clients)
    calls.seconds = time.perf_counter() - start
    calls.cores = {name: (read() - before[name]) / calls.seconds for name, read in watched.items()}


def cpu_watch(server: int, database: int | None = None) -> dict[str, Callable[[], float]]:
    watched = {
        CLIENT: time.process_time,
        SERVER: lambda: cpu_seconds(server),
        MACHINE: machine_busy_seconds,
    }
    if database is not None:
        watched[DATABASE] = lambda: cpu_seconds(database, children=True)
    return watched


# ---- the run ---------------------------------------------------------------------------------


@dataclass
class Decided:
    """What the decisions topic holds after the run."""

    tasks: int  # distinct task ids
    records: int


@dataclass
class Result:
    tasks: int
    reviewers: int
    api: Calls
    bare: Calls
    decided: Decided


@dataclass
class Bench:
    args: argparse.Namespace
    stack: Stack
    client: httpx.AsyncClient
    records: list[Raw]

    def bar(self, label: str, total: int) -> Callable[[], None]:
        """A progress bar; calling the result advances it by one."""
        progress = self.stack.progress
        task = progress.add_task(label, total=total)
        return lambda: progress.advance(task)

    async def bare(self) -> Calls:
        """The bare endpoint under ``--reviewers`` clients, for twice ``--tasks`` requests: about
        as many as the reviewers send."""
        port = free_port()
        process = self.stack.start_process("bare", [*BARE_SERVER, "--port", str(port)])
        await asyncio.to_thread(wait_until, lambda: listening(process, port), WAIT_S, "bare")
        requests = 2 * self.args.tasks
        done = self.bar("bare endpoint: requests", requests)
        shared = iter(range(requests))
        url = f"http://127.0.0.1:{port}/bare"
        calls = Calls()
        clients = [
            bare_client(self.client, url, shared, calls, done) for _ in range(self.args.reviewers)
        ]
        await run_clients(calls, clients, cpu_watch(process.pid))
        await asyncio.to_thread(process.stop)
        return calls

    async def review_api(self) -> tuple[Calls, Decided]:
        bootstrap = self.stack.bootstrap
        database = await asyncio.to_thread(self.stack.start_postgres)
        url = await asyncio.to_thread(database.create_database, "review_api")
        topics = await make_topics(bootstrap, self.stack.prefix("review-api"), stamped)
        await produce(bootstrap, topics.routed, self.records, self.stack.progress)
        env = {"TANDEM_REVIEW_API_DATABASE_URL": url, "TANDEM_REVIEW_API_GROUP_ID": GROUP}
        services = self.stack.start_service("review-api", topics.prefix, env, "review-api")
        await asyncio.to_thread(services.wait_ready, WAIT_S)
        (api,) = services.running
        await self.taken_in(topics, api.process.alive)
        calls = Calls()
        done = self.bar("reviewers: claiming and deciding", len(self.records))
        settings = RuntimeSettings()
        clients = [
            reviewer(
                self.client,
                api.url,
                mint_token(settings, f"reviewer-{n}", ["reviewer"]),
                calls,
                done,
            )
            for n in range(self.args.reviewers)
        ]
        assert database.process is not None  # started above
        await run_clients(calls, clients, cpu_watch(api.process.pid, database.process.pid))
        await asyncio.to_thread(services.stop)
        return calls, await decided(bootstrap, topics.decisions)

    async def taken_in(self, topics: Topics, alive: Callable[[], bool]) -> None:
        """Until the API's group has committed every review request: each is then in the
        database, as the group commits a batch once the batch is stored."""
        bar = self.stack.progress.add_task(
            "review API: taking in requests", total=len(self.records)
        )
        async with committed_by(self.stack.bootstrap, GROUP, topics.routed) as count:
            await wait_for(count, len(self.records), topics.routed, self.stack.progress, bar, alive)


def listening(process: Process, port: int) -> bool:
    if not process.alive():
        raise RuntimeError(f"{process.name} exited; see {process.log}")
    return port_open(port)


async def decided(bootstrap: str, topic: str) -> Decided:
    distinct = len(await read_stamps(bootstrap, topic))
    async with records_on(bootstrap, topic) as count:
        return Decided(distinct, await count())


async def run(bench: Bench) -> Result:
    console = bench.stack.progress.console
    # The bare endpoint first, while nothing else of the run is started beside the broker.
    bare = await bench.bare()
    console.print(f"bare endpoint: {bare.rate():,.0f} ops/s")
    api, decisions = await bench.review_api()
    console.print(f"review API: {api.rate():,.0f} ops/s")
    return Result(bench.args.tasks, bench.args.reviewers, api, bare, decisions)


# ---- the report ------------------------------------------------------------------------------


def _row(name: str, latencies: Sequence[float], seconds: float) -> list[str]:
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else [np.nan, np.nan]
    rate = len(latencies) / seconds
    return [name, f"{len(latencies):,}", f"{rate:,.0f}", f"{p50:.1f}", f"{p99:.1f}"]


def throughput_table(result: Result) -> Table:
    table = Table(
        title=f"{result.reviewers} clients; an operation is an HTTP request "
        f"({result.tasks:,} reviews on PostgreSQL)",
        caption="ops/s: the row's requests over its phase's wall time "
        "(claim-next and decide share the review API's phase)",
    )
    for column in ("operation", "requests", "ops/s", "p50 ms", "p99 ms", "÷ bare"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    api, bare = result.api, result.bare
    table.add_row(*_row(CLAIM, api.latencies[CLAIM], api.seconds), "")
    table.add_row(*_row(DECIDE, api.latencies[DECIDE], api.seconds), "")
    both = api.latencies[CLAIM] + api.latencies[DECIDE]
    table.add_row(*_row(API, both, api.seconds), f"{api.rate() / bare.rate():.3f}")
    table.add_row(*_row(BARE, bare.latencies[BARE], bare.seconds), "1")
    return table


def cpu_table(result: Result) -> Table:
    table = Table(
        title=f"CPU over each phase, in cores (the machine has {os.cpu_count()})",
        caption="client: this process. machine: every process on it, other work included. "
        "server ms/op: the server's CPU time per answered request, PostgreSQL's included",
    )
    names = (CLIENT, SERVER, DATABASE, MACHINE)
    for column in ("phase", *names, "server ms/op", "÷ bare"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    api, bare = result.api, result.bare
    for phase, calls in (("review API", api), (BARE, bare)):
        cores = [f"{calls.cores[n]:.2f}" if n in calls.cores else "" for n in names]
        ratio = f"{calls.server_ms() / bare.server_ms():.3g}"
        table.add_row(phase, *cores, f"{calls.server_ms():.2f}", ratio)
    return table


def unexpected_table(result: Result) -> Table | None:
    rows = [
        (op, status, count, calls.first_message[op, status])
        for calls in (result.api, result.bare)
        for (op, status), count in calls.unexpected.most_common()
    ]
    if not rows:
        return None
    table = Table(title="unexpected answers (a 5xx is a bug)", show_lines=True)
    for column in ("operation", "status", "count", "first message"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for op, status, count, message in rows:
        table.add_row(op, status, str(count), message)
    return table


def sanity_line(result: Result) -> str:
    got = result.decided
    if got.tasks == result.tasks and got.records == result.tasks:
        return (
            f"sanity: every task decided exactly once ({got.records:,} decisions, "
            f"{got.tasks:,} distinct task ids, {result.tasks:,} tasks)"
        )
    return (
        f"[bold red]sanity: NOT every task decided exactly once: {got.records:,} decisions "
        f"for {got.tasks:,} distinct task ids, {result.tasks:,} tasks pre-loaded[/]"
    )


def report(console: Console, result: Result) -> None:
    console.print(throughput_table(result))
    console.print(cpu_table(result))
    unexpected = unexpected_table(result)
    console.print(unexpected if unexpected is not None else "no unexpected answers")
    console.print(sanity_line(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5_000, help="review requests pre-loaded")
    parser.add_argument("--reviewers", type=int, default=50, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.tasks < 1 or args.reviewers < 1:
        parser.error("--tasks and --reviewers must be at least 1")

    async def measure(stack: Stack) -> Result:
        records = review_requests(args.tasks, args.seed)
        transport = SmallPools(connections=args.reviewers)
        async with httpx.AsyncClient(transport=transport, timeout=WAIT_S) as client:
            return await run(Bench(args, stack, client, records))

    return run_bench(f"drawing and scoring {args.tasks} tasks", measure, report)


if __name__ == "__main__":
    sys.exit(main())
