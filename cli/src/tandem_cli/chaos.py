"""`tandem chaos`: proves "exactly one decision per task, nothing lost" under failures.

On a stack of its own (chaos_stack.py) it runs a realistic workload (chaos_workload.py) with
simulated people deciding over HTTP (reviewers.py), and meanwhile:

- **kills**: SIGKILLs a random service every few seconds and starts it again, and kills the
  broker (SIGKILL) and starts it again on the same port and data, a few seconds down each time;
- **outage**: the broker down while tasks come in over HTTP ingress and people decide the reviews
  they had claimed before; then PostgreSQL stopped at once under load and started again.

Then it waits until every task has a decision and reports (chaos_report.py). Everything it
started is stopped by its pid at the end, also on a failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.progress import Progress

from tandem_cli.chaos_faults import (
    HELD,
    READY_GRACE_S,
    WARM_TASKS,
    broker_outage,
    hold,
    inject,
    interleave,
    postgres_restart,
    probe,
)
from tandem_cli.chaos_plan import Plan, Run
from tandem_cli.chaos_readback import audit, ledger_settled, read_dead_letters, read_decisions
from tandem_cli.chaos_report import Faults, Report
from tandem_cli.chaos_stack import SERVICE_NAMES, ChaosStack
from tandem_cli.chaos_workload import DecisionWatch, Workload, draw, publish_steadily
from tandem_cli.reviewers import Desk, work_queue

LEDGER_S = 300.0  # the longest wait for the ledger to stop growing
FAULTS_SPAN = 0.75


def run(plan: Plan, console: Console, keep: bool = False) -> list[Report]:
    """Start a stack in a fresh folder, run the plan's scenarios on it, stop everything.
    The folder (logs, data) is removed when every check passed and the liveness probe had
    nothing to restart, unless ``keep``."""
    home = Path(tempfile.mkdtemp(prefix="tandem-chaos-"))
    os.chmod(home, 0o777)  # the postgres user writes below it
    reports: list[Report] = []
    stack = ChaosStack(home, plan.stack)
    try:
        with _sigterm_as_interrupt():
            stack.start(console.print)
            reports = asyncio.run(_scenarios(stack, plan, console))
    finally:
        console.print("stopping the chaos stack…")
        stack.stop()
        # Kept to read: after a failed check, and after a restart by the liveness probe.
        probed = any(r.faults.supervised for r in reports)
        if keep or probed or not reports or not all(r.ok for r in reports):
            console.print(f"logs and data kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return reports


async def _scenarios(stack: ChaosStack, plan: Plan, console: Console) -> list[Report]:
    reports = []
    if plan.scenario in ("kills", "all"):
        reports.append(await kills(stack, plan, console))
        reports[-1].print(console)
    if plan.scenario in ("outage", "all"):
        reports.append(await outage(stack, plan, console))
        # The ledger holds the earlier scenario's events too.
        reports[-1].resubmitted_before = {t for r in reports[:-1] for t in r.resubmitted}
        reports[-1].print(console)
    return reports


async def kills(stack: ChaosStack, plan: Plan, console: Console) -> Report:
    """A steady stream with kills and broker restarts spread over it."""
    work = draw(plan.tasks, plan.seed, f"chaos-{plan.seed}-k")
    asked = Faults(broker_restarts=plan.broker_restarts)
    asked.kills["any"] = plan.kills
    console.print(
        f"[bold]kills[/bold]: {len(work.submissions)} submissions ({len(work.truth)} task ids) "
        f"at {plan.rate:g}/s, {plan.kills} kills and {plan.broker_restarts} broker restarts"
    )
    async with _running(stack, plan, work, console) as r:
        events = interleave(plan.kills, plan.broker_restarts)
        # Over the first three quarters of the stream: the last fault's recovery (a group
        # waits for a killed member's session to time out) still sees tasks flowing.
        duration = len(work.submissions) / plan.rate * FAULTS_SPAN
        monkey = asyncio.create_task(inject(r, events, duration, random.Random(plan.seed)))
        published = await publish_steadily(
            r.kafka, stack.topics.submitted, work.submissions, plan.rate
        )
        r.say(f"published {published.sent} ({published.resent} sent again after a failure)")
        await monkey
        return await _finish(r, "kills", asked, published.seconds, [])


async def outage(stack: ChaosStack, plan: Plan, console: Console) -> Report:
    """The broker down while tasks come over HTTP and people decide what they hold; then
    PostgreSQL stopped at once under load and started again."""
    warm = max(plan.outage_tasks, WARM_TASKS)
    work = draw(warm * 3, plan.seed + 1, f"chaos-{plan.seed}-o")
    first, later = work.submissions[:warm], work.submissions[warm:]
    # New ids only over HTTP: the ingress answers a known one 200 (a no-op), not 202.
    over_http = draw(plan.outage_tasks, plan.seed + 2, f"chaos-{plan.seed}-h", resubmit_rate=0)
    work.submissions += over_http.submissions
    work.truth |= over_http.truth
    asked = Faults(broker_restarts=1, postgres_restarts=1)
    console.print(
        f"[bold]outage[/bold]: {len(first)} tasks, then the broker down {plan.outage_s:g} s "
        f"while {plan.outage_tasks} come over HTTP; then {len(later)} tasks while PostgreSQL "
        "restarts"
    )
    async with _running(stack, plan, work, console) as r:
        warm_s = len(first) / plan.rate
        holding = asyncio.create_task(hold(r, HELD, warm_s * 0.5, warm_s + READY_GRACE_S))
        published = await publish_steadily(r.kafka, stack.topics.submitted, first, plan.rate)
        held = await holding
        ingress, decided = await broker_outage(r, over_http.submissions, held)
        pg = asyncio.create_task(postgres_restart(r, delay=len(later) / plan.rate / 4))
        more = await publish_steadily(r.kafka, stack.topics.submitted, later, plan.rate)
        await pg
        extra = [
            (
                "HTTP ingress answered 202 while the broker was down",
                ingress.accepted == ingress.asked,
                f"{ingress.accepted} of {ingress.asked}; others: {ingress.other}",
            ),
            (
                "reviews held before the outage decided during it",
                bool(held) and decided == len(held),
                f"{decided} of {len(held)}",
            ),
        ]
        return await _finish(r, "outage", asked, published.seconds + more.seconds, extra)


@contextlib.asynccontextmanager
async def _running(
    stack: ChaosStack, plan: Plan, work: Workload, console: Console
) -> AsyncIterator[Run]:
    """The watchers, the liveness probe and the people, for the length of a scenario."""
    r = Run(
        stack,
        plan,
        work,
        console,
        Faults(),
        Desk(stack.url("review-api"), work.truth),
        DecisionWatch(stack.broker.bootstrap_servers, stack.topics.decisions),
        asyncio.Lock(),
        time.monotonic(),
    )
    stop = asyncio.Event()
    background = [asyncio.create_task(r.watch.run(stop)), asyncio.create_task(probe(r, stop))]
    r.people = work_queue(r.desk, plan.reviewers, plan.seniors, plan.seed, r.people_stop)
    try:
        yield r
    finally:
        stop.set()
        await r.dismiss_people()
        await asyncio.gather(*background, return_exceptions=True)


async def _finish(
    r: Run, scenario: str, asked: Faults, publish_s: float, extra: list[tuple[str, bool, str]]
) -> Report:
    """Wait for every decision, let the ledger settle, read everything back, report."""
    decided_s = await _wait_decided(r)
    await r.dismiss_people()
    services = {name: r.stack.url(name) for name in SERVICE_NAMES}
    r.say("waiting for the ledger to stop growing…")
    bootstrap, topics = r.stack.broker.bootstrap_servers, r.stack.topics
    settled, size = await ledger_settled(bootstrap, topics, services, LEDGER_S)
    r.say(f"ledger {'settled' if settled else 'still moving'} at {size:.0f} entries; verifying…")
    verify, completeness = await audit(r.stack.url("audit-sink"), r.say)
    decisions = await read_decisions(bootstrap, topics.decisions, r.work.truth)
    letters = await read_dead_letters(bootstrap, topics.deadletter)
    return Report(
        scenario=scenario,
        command=r.plan.command(),
        submissions=len(r.work.submissions),
        unique=len(r.work.truth),
        resubmitted=r.work.resubmitted,
        critical=r.work.critical,
        decisions=decisions,
        dead_letters=letters,
        verify=verify,
        completeness=completeness,
        ledger_settled=settled,
        faults=r.faults,
        asked=asked,
        reviews_decided=r.desk.decided,
        unanswered=r.desk.unanswered,
        wall_s=time.monotonic() - r.started,
        publish_s=publish_s,
        decided_s=decided_s,
        extra=extra,
        notes=[f"logs: {r.stack.logs()}"],
    )


async def _wait_decided(r: Run) -> float:
    """Until every task id has a decision, or the wait is over; seconds from the start to the
    last decision."""
    ids = set(r.work.truth)
    deadline = time.monotonic() + r.plan.wait_s
    with Progress(console=r.console, transient=True) as progress:
        bar = progress.add_task("tasks decided", total=len(ids))
        while time.monotonic() < deadline:
            done = len(ids & r.watch.decided)
            progress.update(bar, completed=done)
            if done == len(ids):
                break
            await asyncio.sleep(0.5)
    missing = len(ids - r.watch.decided)
    if missing:
        r.say(f"[red]{missing} task(s) still undecided after {r.plan.wait_s:g} s[/red]")
    else:
        r.say("every task has a decision")
    return max(r.watch.last_at - r.started, 0.0)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does: through the clean-up that stops what it started."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
