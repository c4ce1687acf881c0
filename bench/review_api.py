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
Then the same again on a database and topics of their own, the reviewers paced to ``--paced``
operations a second between them, for the latency at that rate rather than at the most the
API can do. Each time, the decisions topic is read to check that every task was decided
exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
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
    verdict,
    wait_for,
)
from rich.console import Console
from rich.table import Table
from tandem_cli.stack.postgres import PostgresServer
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
PACED = 500.0  # ops/s of the paced phase: the rate the aim asks p99 ≤ 100 ms at
LATENCY_AIM_MS = 100.0
# The paced phase's first seconds are not counted in its latencies: 50 connections open and the
# server warms to the rate, as in the stream services' latency phases (harness.WARMUP_S).
WARMUP_S = 2.0
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
    # Paced: the latencies of requests due from ``counted_from`` (perf_counter) on.
    counted_from: float = 0.0
    steady: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

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
    calls: Calls,
    op: str,
    request: Awaitable[httpx.Response],
    expected: Collection[int],
    since: float | None = None,
) -> httpx.Response | None:
    """The answer, its latency recorded under ``op`` (from ``since``, a perf_counter time, if
    given); None for a request that failed or an answer not ``expected``, each recorded with its
    message."""
    start = time.perf_counter() if since is None else since
    try:
        response = await request
    except httpx.HTTPError as exc:
        calls.miss(op, type(exc).__name__, str(exc) or repr(exc))
        return None
    calls.latencies[op].append(time.perf_counter() - start)
    if since is not None and since >= calls.counted_from:
        calls.steady[op].append(time.perf_counter() - start)
    if response.status_code not in expected:
        calls.miss(op, str(response.status_code), response.text)
        return None
    return response


@dataclass
class Pace:
    """A reviewer's requests at a steady rate: its k-th due at start + offset + k × interval."""

    start: float  # perf_counter
    offset: float
    interval: float
    sent: int = 0

    async def due(self) -> float:
        """Wait for the next request's time, and return it: its latency counts from then, so
        a server that falls behind is charged for the wait it causes, not only the answer."""
        due = self.start + self.offset + self.sent * self.interval
        self.sent += 1
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        return due


async def reviewer(
    client: httpx.AsyncClient,
    api: str,
    token: str,
    calls: Calls,
    done: Callable[[], None],
    pace: Pace | None = None,
) -> None:
    """Claim the most urgent review and decide it, until the queue is empty; each request as
    soon as the last is answered, or when ``pace`` has it due."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"outcome": OUTCOME, "rationale": "checked by the benchmark"}
    misses = 0

    async def since() -> float | None:
        return None if pace is None else await pace.due()

    while misses < MAX_MISSES:
        due = await since()  # before the request is made: its latency counts from then
        claim = await timed(
            calls, CLAIM, client.post(f"{api}/v1/reviews/next", headers=headers), (200, 404), due
        )
        if claim is not None and claim.status_code == 404:
            return
        decision = None
        if claim is not None:
            url = f"{api}/v1/reviews/{claim.json()['review_id']}/decision"
            due = await since()
            decision = await timed(
                calls, DECIDE, client.post(url, headers=headers, json=body), (200,), due
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
    # What this process holds already (the records, the scored tasks) stays out of the
    # collector's full passes, which would otherwise stall every client at once.
    gc.collect()
    gc.freeze()
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
    paced: Calls | None  # the reviewers paced to --paced ops/s; None with --paced 0
    paced_decided: Decided | None


@dataclass
class Bench:
    args: argparse.Namespace
    stack: Stack
    client: httpx.AsyncClient
    records: list[Raw]
    database: PostgresServer | None = None

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

    async def review_api(self, paced: float = 0.0) -> tuple[Calls, Decided]:
        """The reviewers on the review API with the reviews pre-loaded, on a database and
        topics of their own: as fast as it answers, or ``paced`` ops/s between them."""
        bootstrap = self.stack.bootstrap
        database = await self.postgres()
        name = "review_api_paced" if paced else "review_api"
        url = await asyncio.to_thread(database.create_database, name)
        topics = await make_topics(bootstrap, self.stack.prefix(name.replace("_", "-")), stamped)
        await produce(bootstrap, topics.routed, self.records, self.stack.progress)
        env = {"TANDEM_REVIEW_API_DATABASE_URL": url, "TANDEM_REVIEW_API_GROUP_ID": GROUP}
        services = self.stack.start_service("review-api", topics.prefix, env, "review-api")
        await asyncio.to_thread(services.wait_ready, WAIT_S)
        (api,) = services.running
        await self.taken_in(topics, api.process.alive)
        calls = Calls(counted_from=time.perf_counter() + WARMUP_S)
        label = f"reviewers at {paced:,.0f} ops/s" if paced else "reviewers: claiming and deciding"
        done = self.bar(label, len(self.records))
        settings = RuntimeSettings()
        reviewers = self.args.reviewers
        start, interval = time.perf_counter(), reviewers / paced if paced else 0.0
        clients = [
            reviewer(
                self.client,
                api.url,
                mint_token(settings, f"reviewer-{n}", ["reviewer"]),
                calls,
                done,
                Pace(start, n * interval / reviewers, interval) if paced else None,
            )
            for n in range(reviewers)
        ]
        assert database.process is not None  # started above
        await run_clients(calls, clients, cpu_watch(api.process.pid, database.process.pid))
        await asyncio.to_thread(services.stop)
        return calls, await decided(bootstrap, topics.decisions)

    async def postgres(self) -> PostgresServer:
        """The run's PostgreSQL server, started the first time."""
        if self.database is None:
            self.database = await asyncio.to_thread(self.stack.start_postgres)
        return self.database

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
        # Counted until the count holds still, at least one record a task read: the first
        # reads may come back empty before the consumer has fetched anything.
        records, last = await count(), -1
        while records < distinct or records != last:
            await asyncio.sleep(0.2)
            records, last = await count(), records
        return Decided(distinct, records)


async def run(bench: Bench) -> Result:
    console = bench.stack.progress.console
    # The bare endpoint first, while nothing else of the run is started beside the broker.
    bare = await bench.bare()
    console.print(f"bare endpoint: {bare.rate():,.0f} ops/s")
    api, decisions = await bench.review_api()
    console.print(f"review API: {api.rate():,.0f} ops/s")
    paced, paced_decisions = None, None
    if bench.args.paced:
        paced, paced_decisions = await bench.review_api(bench.args.paced)
        console.print(f"review API, paced: {paced.rate():,.0f} ops/s")
    args = bench.args
    return Result(args.tasks, args.reviewers, api, bare, decisions, paced, paced_decisions)


# ---- the report ------------------------------------------------------------------------------


def _percentiles(latencies: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 in ms."""
    if not latencies:
        return np.nan, np.nan
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return float(p50), float(p99)


def _row(
    name: str,
    latencies: Sequence[float],
    seconds: float,
    counted: Sequence[float] | None = None,
) -> list[str]:
    """The row's requests and rate from ``latencies``; its percentiles from ``counted`` (the
    paced phase's after its warm-up) if given, else from the same."""
    p50, p99 = _percentiles(latencies if counted is None else counted)
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


def paced_table(result: Result, paced: Calls, asked: float) -> Table:
    table = Table(
        title=f"{result.reviewers} clients paced to {asked:,.0f} ops/s between them",
        caption="latency from each request's due time, so a server that falls behind is "
        f"charged for the wait it causes; the first {WARMUP_S:.0f} s not counted",
    )
    for column in ("operation", "requests", "ops/s", "p50 ms", "p99 ms", "aim"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    all_of, counted, seconds = paced.latencies, paced.steady, paced.seconds
    table.add_row(*_row(CLAIM, all_of[CLAIM], seconds, counted[CLAIM]), "")
    table.add_row(*_row(DECIDE, all_of[DECIDE], seconds, counted[DECIDE]), "")
    both = counted[CLAIM] + counted[DECIDE]
    met = paced.rate() >= 0.95 * asked and _percentiles(both)[1] <= LATENCY_AIM_MS
    aim = verdict(met, f"p99 ≤ {LATENCY_AIM_MS:.0f} at {asked:,.0f}/s")
    table.add_row(*_row(API, all_of[CLAIM] + all_of[DECIDE], seconds, both), aim)
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
    phases = [("review API", api), (BARE, bare)]
    if result.paced is not None:
        phases.insert(1, ("review API, paced", result.paced))
    for phase, calls in phases:
        cores = [f"{calls.cores[n]:.2f}" if n in calls.cores else "" for n in names]
        ratio = f"{calls.server_ms() / bare.server_ms():.3g}"
        table.add_row(phase, *cores, f"{calls.server_ms():.2f}", ratio)
    return table


def unexpected_table(result: Result) -> Table | None:
    rows = [
        (op, status, count, calls.first_message[op, status])
        for calls in (result.api, result.bare, result.paced)
        if calls is not None
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


def sanity_line(phase: str, got: Decided, tasks: int) -> str:
    if got.tasks == tasks and got.records == tasks:
        return (
            f"sanity ({phase}): every task decided exactly once ({got.records:,} decisions, "
            f"{got.tasks:,} distinct task ids, {tasks:,} tasks)"
        )
    return (
        f"[bold red]sanity ({phase}): NOT every task decided exactly once: {got.records:,} "
        f"decisions for {got.tasks:,} distinct task ids, {tasks:,} tasks pre-loaded[/]"
    )


def report(console: Console, result: Result, paced: float) -> None:
    console.print(throughput_table(result))
    if result.paced is not None:
        console.print(paced_table(result, result.paced, paced))
    console.print(cpu_table(result))
    unexpected = unexpected_table(result)
    console.print(unexpected if unexpected is not None else "no unexpected answers")
    console.print(sanity_line("review API", result.decided, result.tasks))
    if result.paced_decided is not None:
        console.print(sanity_line("paced", result.paced_decided, result.tasks))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5_000, help="review requests pre-loaded")
    parser.add_argument("--reviewers", type=int, default=50, help="concurrent clients")
    parser.add_argument(
        "--paced",
        type=float,
        default=PACED,
        help="ops/s of the paced phase, between all reviewers (0: no paced phase)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.tasks < 1 or args.reviewers < 1 or args.paced < 0:
        parser.error("--tasks and --reviewers must be at least 1, --paced not negative")

    async def measure(stack: Stack) -> Result:
        records = review_requests(args.tasks, args.seed)
        transport = SmallPools(connections=args.reviewers)
        async with httpx.AsyncClient(transport=transport, timeout=WAIT_S) as client:
            return await run(Bench(args, stack, client, records))

    return run_bench(
        f"drawing and scoring {args.tasks} tasks", measure, partial(report, paced=args.paced)
    )


if __name__ == "__main__":
    sys.exit(main())
