"""The chaos harness's workload: tasks drawn from the reference data set (a few of them an earlier
task id submitted again), published at a steady rate as a producer would, sent over HTTP
ingress, and the decisions watched as they come."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from tandem_shared.auth import mint_token
from tandem_shared.batches import sleep_or_stop
from tandem_shared.clients import aiokafka_reader
from tandem_shared.envelope import Event
from tandem_shared.events import TaskSubmitted
from tandem_shared.kafka import make_producer
from tandem_shared.reading import assign_all
from tandem_shared.settings import KafkaSettings, RuntimeSettings

from tandem_cli.dataset import sample_tasks
from tandem_cli.publish import SOURCE

TICK_S = 0.05


@dataclass
class Workload:
    """Submissions in publishing order, and the true label of each task id (its first
    submission's: a submission again is a no-op, whatever it carries)."""

    submissions: list[TaskSubmitted]
    truth: dict[str, str]
    resubmitted: set[str] = field(default_factory=set)

    @property
    def critical(self) -> int:
        first = {t.task_id: t for t in reversed(self.submissions)}
        return sum(t.critical for t in first.values())


def draw(
    count: int,
    seed: int,
    prefix: str,
    resubmit_rate: float = 0.01,
    critical_rate: float = 0.03,
) -> Workload:
    """``count`` submissions; about ``resubmit_rate`` of them reuse an earlier task id, half
    of those with the same body (a producer's retry), half with other features."""
    rng = random.Random(seed)
    drawn = sample_tasks(count, seed, critical_rate=critical_rate)
    submissions: list[TaskSubmitted] = []
    bodies: dict[str, TaskSubmitted] = {}
    ids: list[str] = []
    work = Workload(submissions, {})
    for n, (body, label) in enumerate(drawn):
        if ids and rng.random() < resubmit_rate:
            task_id = rng.choice(ids)
            work.resubmitted.add(task_id)
            same = rng.random() < 0.5
            submissions.append(
                bodies[task_id]
                if same
                else TaskSubmitted.model_validate({**body, "task_id": task_id})
            )
            continue
        task = TaskSubmitted.model_validate({**body, "task_id": f"{prefix}-{n:06d}"})
        submissions.append(task)
        bodies[task.task_id] = task
        ids.append(task.task_id)
        work.truth[task.task_id] = label
    return work


@dataclass
class Published:
    sent: int = 0
    acked: int = 0
    resent: int = 0  # sends that failed (the broker down past the producer's timeout), sent again
    seconds: float = 0.0


async def publish_steadily(
    kafka: KafkaSettings, topic: str, tasks: Sequence[TaskSubmitted], rate: float
) -> Published:
    """Publish ``tasks`` at ``rate`` a second, as the clock says (a stall is caught up), and
    return once the broker acknowledged every one; a send that failed is sent again."""
    producer = make_producer(kafka, client_id="tandem-chaos")
    await producer.start()
    done = Published()
    pending: list[tuple[asyncio.Future[object], TaskSubmitted]] = []

    async def send(task: TaskSubmitted) -> None:
        event = Event.derived(task, source=SOURCE, subject=task.task_id, stage="submitted")
        future = await producer.send(
            topic, event.value(), key=task.task_id.encode(), headers=event.headers()
        )
        pending.append((future, task))

    async def sweep() -> None:
        failed = [t for f, t in pending if f.done() and f.exception() is not None]
        done.acked += sum(1 for f, _ in pending if f.done() and f.exception() is None)
        pending[:] = [(f, t) for f, t in pending if not f.done()]
        for task in failed:
            done.resent += 1
            await send(task)

    started = time.monotonic()
    try:
        while done.sent < len(tasks):
            due = min(len(tasks), int((time.monotonic() - started) * rate) + 1)
            for task in tasks[done.sent : due]:
                await send(task)
            done.sent = max(done.sent, due)
            await sweep()
            await asyncio.sleep(TICK_S)
        done.seconds = time.monotonic() - started
        while pending:
            await asyncio.wait([f for f, _ in pending], timeout=1.0)
            await sweep()
    finally:
        await producer.stop()
    return done


@dataclass
class Ingress:
    asked: int = 0
    accepted: int = 0  # 202 at the first try
    other: dict[str, int] = field(default_factory=dict)  # any other answer, by status or error
    refused: list[TaskSubmitted] = field(default_factory=list)  # not accepted at the first try


def _producer() -> dict[str, str]:
    token = mint_token(RuntimeSettings(), "chaos-producer", ["service"])
    return {"Authorization": f"Bearer {token}"}


async def _post(client: httpx.AsyncClient, task: TaskSubmitted) -> str:
    """The ingress's answer to a task: its status code, or the error that stood for one."""
    try:
        response = await client.post("/v1/tasks", json=task.model_dump(mode="json"))
    except httpx.TransportError as exc:
        return type(exc).__name__
    return str(response.status_code)


async def post_tasks(api: str, tasks: Sequence[TaskSubmitted], seconds: float) -> Ingress:
    """POST each task to the HTTP ingress, spread evenly over ``seconds``; every answer is
    counted (a 202 is what a producer expects: the task is the database's, then Kafka's)."""
    result = Ingress(asked=len(tasks))
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=api, headers=_producer(), timeout=30) as client:
        for n, task in enumerate(tasks):
            await asyncio.sleep(max(0.0, started + n * seconds / len(tasks) - time.monotonic()))
            answer = await _post(client, task)
            if answer == "202":
                result.accepted += 1
            else:
                result.other[answer] = result.other.get(answer, 0) + 1
                result.refused.append(task)
    return result


async def post_until_accepted(api: str, tasks: Sequence[TaskSubmitted], within: float) -> int:
    """As a producer does with what the ingress did not accept: send again until it is (202,
    or 200 for an id it knows), for up to ``within`` seconds; how many never were."""
    left = list(tasks)
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=api, headers=_producer(), timeout=30) as client:
        while left and time.monotonic() < deadline:
            left = [t for t in left if await _post(client, t) not in ("200", "202")]
            if left:
                await asyncio.sleep(1.0)
    return len(left)


class DecisionWatch:
    """Follows the decisions topic from its start (read_committed) and keeps the task ids
    decided; it rides out broker restarts. For progress only: the report reads the topic
    again from its start once everything settled."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.decided: set[str] = set()
        self.last_at = 0.0  # monotonic time of the newest decision seen

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(**aiokafka_reader(self.bootstrap))
        await consumer.start()
        try:
            partitions: list[TopicPartition] = await assign_all(consumer, self.topic)
            await consumer.seek_to_beginning(*partitions)
            while not stop.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=300, max_records=2000)
                except KafkaError:
                    await sleep_or_stop(stop, 0.5)
                    continue
                for records in batches.values():
                    for record in records:
                        if record.key is not None:
                            self.decided.add(record.key.decode())
                            self.last_at = time.monotonic()
        finally:
            await consumer.stop()
