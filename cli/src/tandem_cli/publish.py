"""Publishing submitted tasks the way a producer does, with progress for long runs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from pydantic import ValidationError
from rich.progress import Progress
from tandem_shared.envelope import Event
from tandem_shared.events import TaskSubmitted
from tandem_shared.kafka import Outgoing, Publisher, make_producer
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

SOURCE = "tandem/cli"


def read_json_lines(stream: TextIO) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not JSON: {exc.msg}") from exc
        if not isinstance(body, dict):
            raise ValueError(f"line {number}: expected a JSON object")
        yield body


def validate(bodies: Iterable[dict[str, Any]]) -> list[TaskSubmitted]:
    tasks = []
    for number, body in enumerate(bodies, start=1):
        try:
            tasks.append(TaskSubmitted.model_validate(body))
        except ValidationError as exc:
            raise ValueError(
                f"task {number}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            ) from exc
    return tasks


async def publish_tasks(
    kafka: KafkaSettings,
    tasks: list[TaskSubmitted],
    progress: Progress | None = None,
    chunk: int = 500,
) -> None:
    """Publish and wait for the broker's acknowledgement of every task."""
    topic = Topics(kafka.topic_prefix).submitted
    producer = make_producer(kafka, client_id="tandem-cli")
    await producer.start()
    bar = progress.add_task("publishing tasks", total=len(tasks)) if progress else None
    try:
        publisher = Publisher(producer)
        for start in range(0, len(tasks), chunk):
            part = tasks[start : start + chunk]
            await publisher.publish(
                [
                    Outgoing(
                        topic, Event.derived(t, source=SOURCE, subject=t.task_id, stage="submitted")
                    )
                    for t in part
                ]
            )
            if progress is not None and bar is not None:
                progress.advance(bar, len(part))
    finally:
        await producer.stop()
