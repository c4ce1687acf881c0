"""The audit API's OpenAPI document against the running sink, as each role: schemathesis sends
what the document allows and what it does not, follows its links from the completeness report
and the checkpoints to real tasks, events and tree sizes, and finds no server error, no
undocumented response, no schema-valid request refused for a reason the document does not give
and no invalid one accepted (the times and limits it describes, case by case: test_inputs.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tandem_audit_sink.app import create_app
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.store import Ledger
from tandem_cli.audit_client import verify_now
from tandem_shared.auth import mint_token
from tandem_shared.envelope import Event
from tandem_shared.events import DecisionMade, EventData
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.topics import Topics

from tests import contract_harness as contract
from tests.audit_sink.harness import bearer, events, record
from tests.kafka_utils import produce
from tests.service_utils import committed, eventually, serving

pytestmark = [pytest.mark.kafka, pytest.mark.alone]
# Auditors read; admins may only ask for a verification; the others may do nothing.
ROLES = ("auditor", "admin", "reviewer", "senior", "service")
AUDITOR = bearer("auditor")
# Per operation and phase, and stateful sequences: the file stays well within a minute. Task
# ids come only from the completeness report's links; with half as many sequences the
# auditor's run followed none to a task.
EXAMPLES = 5
SEQUENCES = 50
# Tasks per wave; a checkpoint is signed after each wave, so proofs have several sizes.
WAVES, TASKS = 4, 5
# What a role reaches (2xx) in the stateful phase, with ids and sizes from earlier responses.
REACHED = {
    "auditor": {
        "GET /v1/audit/tasks/{task_id}",
        "GET /v1/audit/proofs/inclusion",
        "GET /v1/audit/proofs/consistency",
    },
    "admin": {"POST /v1/audit/verify"},
}
AUDIT_API = contract.Contract(
    # Refusals no JSON Schema can state (two parameters at once); each route says it in words.
    refusals={
        "GET /v1/audit/completeness": ("since must be before until", "the window spans at most"),
        "GET /v1/audit/proofs/consistency": ("first must not be larger than second",),
    },
)

Record = tuple[str, bytes, list[tuple[str, bytes]]]


def wave(n: int, topics: Topics) -> dict[str, list[Record]]:
    """Tasks through every stage, and what the completeness report names: a task decided
    again from another source with another outcome (its id then names two entries), a
    decision sent again with other content (a conflict), a decision of a task never
    submitted, and a task decided without a score."""
    tasks = [events(f"seed-{n}-{k}") for k in range(TASKS)]
    out: dict[str, list[Record]] = {
        topic: [record(task[stage]) for task in tasks]
        for topic, stage in (
            (topics.submitted, "submitted"),
            (topics.scored, "scored"),
            (topics.decisions, "decision"),
            (topics.feedback, "feedback"),
        )
    }
    twice, conflict = tasks[0]["decision"], tasks[1]["decision"]
    out[topics.decisions] += [
        record(_declined(twice, source="tests/review-api")),
        record(_declined(conflict, source=conflict.source)),
        record(events(f"seed-{n}-never-submitted")["decision"]),
    ]
    unscored = events(f"seed-{n}-unscored")
    out[topics.submitted].append(record(unscored["submitted"]))
    out[topics.decisions].append(record(unscored["decision"]))
    return out


def _declined(decision: Event[EventData], source: str) -> Event[DecisionMade]:
    assert isinstance(decision.data, DecisionMade)
    data = decision.data.model_copy(update={"outcome": "decline"})
    return Event(decision.id, source, decision.subject, data, decision.time)


async def seed(app: FastAPI, url: str, kafka: KafkaSettings, topics: Topics, group: str) -> None:
    """Each wave through Kafka into the ledger, then a checkpoint; then a whole verification,
    so that GET /v1/audit/verify has one to show."""
    ledger: Ledger = app.state.ledger.shards[0]
    produced = 0
    for n in range(WAVES):
        for topic, records in wave(n, topics).items():
            await produce(kafka.bootstrap_servers, topic, records)
            produced += len(records)

        async def stored(count: int = produced) -> bool:
            return await committed(kafka, group, topics.audited()) == count

        await eventually(stored, f"wave {n} in the ledger")
        assert await ledger.checkpoint() is not None
    async with httpx.AsyncClient(base_url=url) as client:
        report = await verify_now(client, AUDITOR, within=30, poll=0.1)
    assert report["ok"] is True, report


def people(directory: Path, role: str) -> Path:
    token = mint_token(RuntimeSettings(), f"contract-{role}", [role])
    return contract.credentials(directory / f"{role}.json", [token])


@pytest.fixture
async def audit_sink(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, str, str]]:
    """The sink served over HTTP on SQLite, signing checkpoints only when told to."""
    group = f"audit-{uuid.uuid4().hex}"
    settings = AuditSettings(
        kafka=kafka_settings,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}",
        group_id=group,
        batch_timeout_ms=50,
        checkpoint_every=1_000_000,
        checkpoint_seconds=3600,
    )
    app = create_app(settings)
    async with serving(app, "the audit sink") as url:
        yield app, url, group


async def test_every_role_keeps_to_the_document(
    audit_sink: tuple[FastAPI, str, str],
    kafka_settings: KafkaSettings,
    topics: Topics,
    tmp_path: Path,
) -> None:
    app, url, group = audit_sink
    await seed(app, url, kafka_settings, topics, group)
    who = {role: people(tmp_path, role) for role in ROLES}
    outcomes = await contract.run_roles(url, AUDIT_API, who, EXAMPLES, SEQUENCES)
    found = contract.findings(outcomes)
    assert found == [], f"{len(found)} findings:\n\n" + "\n\n".join(found)
    reached = {role: outcome.reached for role, outcome in outcomes.items()}
    # The auditor reaches more than it must; any other role nothing but what it must.
    wrong = {
        role: sorted(done)
        for role, done in reached.items()
        if not (
            REACHED.get(role, set()) <= done
            if role == "auditor"
            else done == REACHED.get(role, set())
        )
    }
    assert wrong == {}, f"not what each role reaches (2xx in the stateful phase): {wrong}"
