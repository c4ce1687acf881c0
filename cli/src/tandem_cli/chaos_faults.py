"""The faults a chaos run injects, one at a time, and the liveness probe that restarts what
they leave unhealthy: a service or the broker killed (SIGKILL) and started again; the broker
down while tasks come over HTTP and people decide what they hold; PostgreSQL stopped at once
and started again."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
from tandem_shared.batches import sleep_or_stop
from tandem_shared.events import TaskSubmitted

from tandem_cli.chaos_plan import Run
from tandem_cli.chaos_stack import SERVICE_NAMES
from tandem_cli.chaos_workload import Ingress, post_tasks, post_until_accepted
from tandem_cli.reviewers import Reviewer, Unanswered

READY_S = 120.0  # a service or the broker not ready this long after a fault: the run fails
HEALTH_S = 2.0  # how often the harness looks at /healthz, as a liveness probe
UNHEALTHY = 3  # looks in a row that found /healthz failing, before a restart
UNANSWERED = 15  # looks in a row without an answer (a process starting answers well before)
HOLDERS = 2  # people who claim reviews before the broker outage and decide them during it
HELD = 6
WARM_TASKS = 200  # the outage scenario's tasks before the outage, at least
READY_GRACE_S = 10.0


@dataclass
class Held:
    """A review claimed and kept: by whom, on which connection."""

    reviewer: Reviewer
    client: httpx.AsyncClient
    item: dict[str, Any]


def interleave(kills: int, restarts: int) -> list[str]:
    """``kills`` service kills with ``restarts`` broker restarts spread evenly among them."""
    events = ["kill"] * kills
    for n in range(restarts):
        events.insert(round((n + 1) * (kills + n + 1) / (restarts + 1)), "broker")
    return events


async def inject(r: Run, events: list[str], duration: float, rng: random.Random) -> None:
    """The events at even times over ``duration``; one after another, each done (the stack
    ready again) before the next."""
    for n, event in enumerate(events):
        at = r.started + duration * (n + 1) / (len(events) + 1)
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if event == "broker":
            await _broker_restart(r, r.plan.broker_down_s)
        else:
            await _kill(r, rng.choice(SERVICE_NAMES), rng.uniform(0.0, 1.0))


async def _kill(r: Run, name: str, down_s: float) -> None:
    """SIGKILL a service, start it again; then wait until the stack is ready (the liveness
    probe at work meanwhile)."""
    async with r.lock:
        pid = r.stack.services.get(name).process.pid
        began = time.monotonic()
        await asyncio.to_thread(r.stack.kill_service, name)
        r.faults.kills[name] += 1
        await asyncio.sleep(down_s)
        restarted = await asyncio.to_thread(r.stack.start_service, name)
    await _recovered(r, f"{name} killed (pid {pid}), now pid {restarted.process.pid}", began)


async def _broker_restart(r: Run, down_s: float) -> None:
    async with r.lock:
        pid = r.stack.broker.process.pid if r.stack.broker.process else None
        began = time.monotonic()
        await asyncio.to_thread(r.stack.kill_broker)
        r.faults.broker_restarts += 1
        r.say(f"broker killed (pid {pid}); down {down_s:g} s")
        await asyncio.sleep(down_s)
        await asyncio.to_thread(r.stack.start_broker)
    await _recovered(r, "broker restarted", began)


async def _recovered(r: Run, what: str, began: float) -> None:
    """Wait until every service is ready again, and note how long the fault took."""
    if await r.stack.ready(within=READY_S):
        r.faults.recoveries.append(time.monotonic() - began)
        r.say(f"{what}; every service ready {time.monotonic() - began:.1f} s after the fault")
    else:
        r.faults.not_recovered.append(what)
        r.say(f"[red]{what}; not every service ready after {READY_S:g} s[/red]")


async def probe(r: Run, stop: asyncio.Event) -> None:
    """A liveness probe: a service whose process is gone, whose /healthz says it is unhealthy
    a few times in a row (a consumer loop ended), or that does not answer for long, is killed
    and started again. Quiet while a fault is being injected."""
    failing = dict.fromkeys(SERVICE_NAMES, 0)
    while not stop.is_set():
        await sleep_or_stop(stop, HEALTH_S)
        if r.lock.locked():
            failing = dict.fromkeys(SERVICE_NAMES, 0)
            continue
        async with r.lock:
            for name in SERVICE_NAMES:
                alive = r.stack.alive(name)
                status = await r.stack.health(name) if alive else None
                if status == 200:
                    failing[name] = 0
                    continue
                failing[name] += 1
                if alive and failing[name] < (UNHEALTHY if status else UNANSWERED):
                    continue
                state = f"answers /healthz {status}" if status else "does not answer"
                r.say(f"[yellow]{name} {state if alive else 'exited'}: restarting it[/yellow]")
                await asyncio.to_thread(r.stack.kill_service, name)
                restarted = await asyncio.to_thread(r.stack.start_service, name)
                r.faults.supervised[name] += 1
                failing[name] = 0
                r.say(f"{name} started again by the probe, pid {restarted.process.pid}")


async def hold(r: Run, want: int, after_s: float, until_s: float) -> list[Held]:
    """People claim ``want`` reviews between them and keep them, to decide during the outage:
    from ``after_s`` into the warm-up, until they have them or ``until_s``."""
    began = time.monotonic()
    await asyncio.sleep(after_s)
    holders = [
        Reviewer(r.desk, f"holder-{i + 1}", "reviewer", random.Random(r.plan.seed + 100 + i))
        for i in range(HOLDERS)
    ]
    held: list[Held] = []
    while len(held) < want and time.monotonic() < began + until_s:
        for holder in holders:
            client = holder.client()
            try:
                items = await holder.hold(client, (want - len(held)) // HOLDERS or 1)
            except Unanswered:
                items = []
            if items:
                held += [Held(holder, client, item) for item in items]
            else:
                await client.aclose()
        await asyncio.sleep(0.2)
    return held


async def broker_outage(
    r: Run, over_http: list[TaskSubmitted], held: list[Held]
) -> tuple[Ingress, int]:
    """Kill the broker; while it is down, POST tasks to the HTTP ingress and decide the held
    reviews; start it again after the outage. Returns the ingress's answers and how many held
    reviews were decided (200)."""
    async with r.lock:
        for h in held:  # fresh leases for the outage
            with contextlib.suppress(Unanswered):
                await h.reviewer.heartbeat(h.client, h.item)
        pid = r.stack.broker.process.pid if r.stack.broker.process else None
        began = time.monotonic()
        await asyncio.to_thread(r.stack.kill_broker)
        r.faults.broker_restarts += 1
        r.say(
            f"broker killed (pid {pid}): down {r.plan.outage_s:g} s; {len(over_http)} tasks "
            f"over HTTP, {len(held)} held reviews to decide"
        )
        ingress = asyncio.create_task(
            post_tasks(r.stack.url("review-api"), over_http, r.plan.outage_s * 0.8)
        )
        await asyncio.sleep(min(2.0, r.plan.outage_s / 5))
        decided = 0
        for h in held:
            try:
                decided += await h.reviewer.decide(h.client, h.item) == 200
            except Unanswered as exc:
                r.say(f"[red]a held review was not decided: {exc}[/red]")
        for client in {id(h.client): h.client for h in held}.values():
            await client.aclose()
        answers = await ingress
        r.say(
            f"HTTP ingress: {answers.accepted} of {answers.asked} answered 202; "
            f"{decided} of {len(held)} held reviews decided; broker still down"
        )
        await asyncio.sleep(max(0.0, began + r.plan.outage_s - time.monotonic()))
        await asyncio.to_thread(r.stack.start_broker)
    await _recovered(r, "broker started again", began)
    if answers.refused:  # sent again, as a producer would: the run's tasks all go in
        lost = await post_until_accepted(r.stack.url("review-api"), answers.refused, READY_S)
        r.say(f"{len(answers.refused) - lost} refused tasks sent again and accepted")
    return answers, decided


async def postgres_restart(r: Run, delay: float) -> None:
    await asyncio.sleep(delay)
    async with r.lock:
        pid = r.stack.postgres.process.pid if r.stack.postgres.process else None
        began = time.monotonic()
        await asyncio.to_thread(r.stack.crash_postgres)
        r.faults.postgres_restarts += 1
        r.say(f"PostgreSQL stopped at once (pid {pid}); down {r.plan.postgres_down_s:g} s")
        await asyncio.sleep(r.plan.postgres_down_s)
        await asyncio.to_thread(r.stack.start_postgres)
    await _recovered(r, "PostgreSQL started again", began)
