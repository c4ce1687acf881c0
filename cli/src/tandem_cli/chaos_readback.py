"""Reading back what a chaos run left: the decisions and dead-letter topics from their start
(read_committed), the consumer groups' progress, and the audit ledger once it settled."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families
from tandem_shared import clients
from tandem_shared.auth import mint_token
from tandem_shared.clients import aiokafka_reader
from tandem_shared.envelope import EnvelopeError, decode, header_map
from tandem_shared.events import DeadLetter, DecisionMade, EventData
from tandem_shared.kafka import Consumed
from tandem_shared.reading import read_records
from tandem_shared.settings import RuntimeSettings
from tandem_shared.topics import Topics

from tandem_cli.audit_client import VerificationTimeout, verify_now
from tandem_cli.chaos_report import Decisions

LETTERS: dict[str, type[EventData]] = {"tandem.deadletter.recorded.v1": DeadLetter}
LEDGER_QUIET_POLLS = 5  # the ledger is settled once it kept its size this many polls (1 s)


async def read_decisions(bootstrap: str, topic: str, scope: Mapping[str, object]) -> Decisions:
    found = Decisions()
    everyone: set[str] = set()

    def keep(record: Consumed) -> None:
        task_id = record.key.decode() if record.key is not None else ""
        everyone.add(task_id)
        if task_id not in scope:
            return
        found.records += 1
        value = record.value or b""  # a record without one fails validation below, loudly
        headers = header_map(record.headers)
        digest = hashlib.sha256(value).hexdigest()
        event = (headers.get("ce_source", ""), headers.get("ce_id", ""), digest)
        events = found.events.setdefault(task_id, set())
        decision = DecisionMade.model_validate_json(value)
        if not events:
            found.decided_by[decision.decided_by] += 1
            took = (decision.decided_at - decision.submitted_at).total_seconds()
            found.latencies.append(took)
        events.add(event)
        found.outcomes.setdefault(task_id, set()).add(decision.outcome)

    await read_records(bootstrap, topic, keep)
    found.tasks = len(everyone)
    return found


async def read_dead_letters(bootstrap: str, topic: str) -> list[str]:
    """Each dead letter on the topic, told in a line: who, from where, why."""
    letters: list[str] = []

    def keep(record: Consumed) -> None:
        try:
            data = decode(
                record.value, record.headers, {"tandem.deadletter.recorded.v1": DeadLetter}
            )
        except EnvelopeError as exc:
            letters.append(f"unreadable letter at offset {record.offset}: {exc}")
            return
        letter = data.data
        assert isinstance(letter, DeadLetter)
        letters.append(
            f"{letter.service}: {letter.origin_topic}/{letter.origin_partition}"
            f"@{letter.origin_offset} ({letter.origin_key}): {letter.error}"
        )

    await read_records(bootstrap, topic, keep)
    return letters


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a /metrics page."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def pipeline_groups(topics: Topics) -> dict[str, list[str]]:
    """Each service's consumer group (the services' defaults) and the topics it reads."""
    return {
        "tandem-scoring": [topics.submitted],
        "tandem-router": [topics.scored],
        "tandem-review-api": [topics.routed, topics.decisions],
        "tandem-audit-sink": topics.audited(),
    }


async def behind(bootstrap: str, topics: Topics) -> dict[str, int]:
    """Per consumer group of the pipeline, the records it has yet to commit past: its committed
    offsets against the ends of its topics (as read_committed readers see them)."""
    admin = AIOKafkaAdminClient(**clients.aiokafka_admin(bootstrap))
    reader = AIOKafkaConsumer(**aiokafka_reader(bootstrap))
    await admin.start()
    await reader.start()
    try:
        out = {}
        for group, names in pipeline_groups(topics).items():
            committed = await admin.list_consumer_group_offsets(group)
            partitions = [
                TopicPartition(t, p)
                for t in names
                for p in sorted(reader.partitions_for_topic(t) or await _partitions(reader, t))
            ]
            ends = await reader.end_offsets(partitions)
            out[group] = sum(
                max(ends[tp] - (committed[tp].offset if tp in committed else 0), 0)
                for tp in partitions
            )
        return out
    finally:
        await reader.stop()
        await admin.close()


async def _partitions(reader: AIOKafkaConsumer, topic: str) -> set[int]:
    await reader._client.force_metadata_update()
    return reader.partitions_for_topic(topic) or set()


async def ledger_settled(
    bootstrap: str, topics: Topics, services: Mapping[str, str], within: float
) -> tuple[bool, float]:
    """Wait until every consumer group of the pipeline committed past the end of its topics,
    the review API's outbox is empty, and the ledger kept its size a few seconds; (settled,
    the ledger's size)."""
    deadline = time.monotonic() + within
    quiet: list[float] = []  # the ledger's sizes while nothing was left to do
    size = 0.0
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                outbox = metric(
                    (await client.get(f"{services['review-api']}/metrics")).text,
                    "tandem_outbox_depth",
                )
                page = (await client.get(f"{services['audit-sink']}/metrics")).text
                size = metric(page, "tandem_audit_tree_size")
                left = sum((await behind(bootstrap, topics)).values())
            except (httpx.TransportError, KafkaError):
                left, outbox = 1, 1
            quiet = [*quiet, size] if not (left or outbox) else []
            if len(quiet) >= LEDGER_QUIET_POLLS and len(set(quiet[-LEDGER_QUIET_POLLS:])) == 1:
                return True, size
            await asyncio.sleep(1.0)
    return False, size


async def audit(
    audit_url: str, progress: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A whole verification of the ledger asked for now, and the completeness report of the
    last week (the run's), as an auditor asks for them."""
    token = mint_token(RuntimeSettings(), "chaos-auditor", ["auditor"])
    async with httpx.AsyncClient(
        base_url=audit_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        try:
            verify = await verify_now(client, within=900, progress=progress)
        except VerificationTimeout as exc:
            verify = {"ok": False, "reason": str(exc)}
        complete: dict[str, Any] = (await client.get("/v1/audit/completeness")).json()
    return verify, complete
