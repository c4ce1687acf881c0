"""Deduplication on (source, id), on each database: the same content again is a duplicate, other
content under a known (source, id) is a conflict, appended and reported, and the ledger with
conflicts verifies and proves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from tandem_audit_sink.api import InclusionProofOut
from tandem_audit_sink.app import create_app
from tandem_audit_sink.auditor import check_inclusion
from tandem_audit_sink.consumer import AuditHandler
from tandem_audit_sink.dedupe import Known, triage
from tandem_audit_sink.ledger import AuditRecord, content_of, parse
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.shards import ShardedLedger, ShardedProof
from tandem_audit_sink.store import AmbiguousEvent, Ledger, LedgerError, migrate
from tandem_audit_sink.telemetry import AuditMetrics
from tandem_shared.envelope import utcnow

from tests.audit_sink.conftest import SIGNER, T0, incoming, record
from tests.audit_sink.harness import DECISION, bearer

SUBMITTED = "tandem.task.submitted.v1"
SCORED = "tandem.task.scored.v1"


def decision(
    task_id: str, outcome: str, event_id: str, source: str = "tandem/router", **data: Any
) -> AuditRecord:
    body = {"task_id": task_id, "task_type": "loan", "outcome": outcome, "decided_by": "model"}
    return record(
        0,
        task=task_id,
        event_id=event_id,
        event_type=DECISION,
        source=source,
        topic="tandem.decisions",
        data=body | data,
    )


def stage(task_id: str, event_type: str, n: int) -> AuditRecord:
    return record(n, task=task_id, event_id=f"{task_id}/{event_type}", event_type=event_type)


def test_triage_sorts_a_batch_against_the_ledger_and_against_itself() -> None:
    stored, changed, elsewhere = record(1), record(1, data={"x": 1}), record(1, source="other")
    fresh, fresh_changed = record(2), record(2, data={"x": 2})
    batch = [stored, changed, elsewhere, fresh, fresh_changed, changed, fresh]
    known = {("tests/producer", "event-1"): Known(7, {content_of(stored).hash})}
    out = triage(batch, [content_of(r) for r in batch], known, next_seq=20)
    # seqs 20, 21, 22, 23 go to the wanted records, in order
    assert [(r, conflict_of) for r, _, conflict_of in out.wanted] == [
        (changed, 7),  # other content under a (source, id) the ledger holds
        (elsewhere, None),  # the same id from another source
        (fresh, None),  # new: seq 22
        (fresh_changed, 22),  # other content under one first seen in this batch
    ]
    assert out.duplicates == [stored, changed, fresh]
    assert known[("tests/producer", "event-1")].hashes == {content_of(stored).hash}  # untouched


async def test_one_id_from_two_sources_is_two_entries(ledger: Ledger) -> None:
    ours, theirs = record(1), record(1, source="tests/elsewhere")  # same id, same data
    result = await ledger.append([ours, theirs])
    assert [(e.seq, e.source, e.conflict_of) for e in result.appended] == [
        (1, "tests/producer", None),
        (2, "tests/elsewhere", None),
    ]
    assert result.duplicates == []
    again = await ledger.append([theirs, ours])
    assert (again.appended, len(again.duplicates)) == ([], 2)
    await ledger.checkpoint()
    # An inclusion proof is of one entry: the ledger will not guess which source was meant.
    with pytest.raises(AmbiguousEvent, match="names 2 entries: seq 1 from source"):
        await ledger.prove_inclusion("event-1")
    proof = await ledger.prove_inclusion("event-1", source="tests/elsewhere")
    assert (proof.entry.seq, proof.entry.source) == (2, "tests/elsewhere")
    assert (await ledger.prove_inclusion("event-1", seq=1)).entry.source == "tests/producer"
    with pytest.raises(LedgerError, match="no event 'event-1' from source 'nobody'"):
        await ledger.prove_inclusion("event-1", source="nobody")


async def test_the_same_content_again_is_a_duplicate_wherever_and_whenever_it_was_sent(
    ledger: Ledger,
) -> None:
    """A replay or a producer's retry may land on another partition, with other headers and,
    from ``Event.derived`` without a time, another ``time``: the event is the same."""
    registry = CollectorRegistry()
    handler = AuditHandler(ShardedLedger([ledger]), AuditMetrics(registry), "checkpoints")
    resent = record(
        1,
        partition=2,
        offset=99,
        key="another-key",
        event_time=T0 + timedelta(hours=1),
        headers={"ce_id": "event-1", "traceparent": "00-abc-def-01"},
    )
    await handler([incoming(record(1))])
    await handler([incoming(resent), incoming(record(1))])
    labels = {"topic": "tandem.tasks.submitted"}
    assert registry.get_sample_value("tandem_audit_entries_total", labels) == 1
    assert registry.get_sample_value("tandem_audit_duplicates_total", labels) == 2
    assert registry.get_sample_value("tandem_audit_conflicts_total", labels) is None
    assert await ledger.size() == 1


async def test_other_content_under_a_known_source_and_id_is_a_conflict_kept_as_evidence(
    ledger: Ledger,
) -> None:
    registry = CollectorRegistry()
    handler = AuditHandler(ShardedLedger([ledger]), AuditMetrics(registry), "checkpoints")
    approve = decision("t-1", "approve", "d-1")
    decline = decision("t-1", "decline", "d-1")  # the same id and source: a retry gone wrong
    refer = decision("t-1", "refer", "d-1")
    # the first and a conflicting one in one batch: the conflict names the seq given just before
    await handler([incoming(approve), incoming(record(2)), incoming(decline)])
    # the conflict again is a duplicate of it; a third content is another conflict
    await handler([incoming(decline), incoming(refer), incoming(record(3))])
    entries = await ledger.entries_of("d-1")
    assert [(e.seq, e.conflict_of) for e in entries] == [(1, None), (3, 1), (4, 1)]
    assert [parse(e.canonical).get("conflict_of") for e in entries] == [None, 1, 1]  # hashed
    labels = {"topic": "tandem.decisions"}
    assert registry.get_sample_value("tandem_audit_conflicts_total", labels) == 2
    assert registry.get_sample_value("tandem_audit_entries_total", labels) == 3
    assert registry.get_sample_value("tandem_audit_duplicates_total", labels) == 1
    assert [e.seq for e in await ledger.conflicts()] == [3, 4]

    # A ledger holding conflicts verifies, and each of its entries can be proven.
    await ledger.checkpoint()
    result = await ledger.verify(chunk_size=2, trusted_keys=[SIGNER.public_key])
    assert result.ok, result.failure
    assert result.entries == 5
    latest = await ledger.latest_checkpoint()
    assert latest is not None
    with pytest.raises(AmbiguousEvent, match=r"seq 3 from source 'tandem/router' \(a conflict"):
        await ledger.prove_inclusion("d-1", source="tandem/router")
    proof = InclusionProofOut.of(ShardedProof(await ledger.prove_inclusion("d-1", seq=3), None))
    entry = check_inclusion(proof.model_dump(mode="json"), latest, decline.data)
    assert (entry["seq"], entry["conflict_of"]) == (3, 1)


@pytest.fixture
async def audit_api(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Ledger]]:
    """The auditor's API on a migrated ledger, without Kafka (no lifespan: no consumer)."""
    await migrate(database_url)
    app = create_app(AuditSettings(database_url=database_url))
    ledger: Ledger = app.state.ledger.shards[0]
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
            yield client, ledger
    finally:
        await ledger.engine.dispose()


async def test_completeness_reports_tasks_decided_twice_and_source_id_conflicts(
    audit_api: tuple[httpx.AsyncClient, Ledger],
) -> None:
    client, ledger = audit_api
    auditor = bearer("auditor")
    pipeline = [stage(t, kind, n) for n, t in enumerate(("t-1", "t-2", "t-3", "t-4", "t-5"))
                for kind in (SUBMITTED, SCORED)]  # fmt: skip
    await ledger.append(
        [
            *pipeline,
            # t-1: the model and a person decided it, under other ids and sources, differently
            decision("t-1", "approve", "t-1/decision"),
            decision("t-1", "decline", "t-1/human", source="tandem/review-api"),
            # t-2: one decision, relayed under another id: the same content counts once
            decision("t-2", "approve", "t-2/decision"),
            decision("t-2", "approve", "t-2/relayed", source="tests/relay"),
            # t-3: other content under a known (source, id): a conflict, and two decisions
            decision("t-3", "approve", "t-3/decision"),
            decision("t-3", "decline", "t-3/decision"),
            # t-4: decided twice with the same outcome, at two times
            decision("t-4", "approve", "t-4/decision", decided_at="2026-01-01T00:00:00Z"),
            decision("t-4", "approve", "t-4/again", decided_at="2026-01-01T00:05:00Z"),
            # t-5: decided once, cleanly
            decision("t-5", "approve", "t-5/decision"),
        ]
    )
    report = (await client.get("/v1/audit/completeness", headers=auditor)).json()
    assert report["complete"] is False
    assert report["decided_tasks"] == 5
    assert (report["missing_stages"], report["events_without_task"]) == ({}, {})
    twice = report["decided_more_than_once"]
    assert sorted(twice) == ["t-1", "t-3", "t-4"]
    assert [(d["outcome"], d["source"], d["event_id"]) for d in twice["t-1"]] == [
        ("approve", "tandem/router", "t-1/decision"),
        ("decline", "tandem/review-api", "t-1/human"),
    ]
    assert report["conflicting_decisions"] == ["t-1", "t-3"]
    [conflict] = report["event_conflicts"]
    t3 = [d["seq"] for d in twice["t-3"]]
    assert conflict == {
        "seq": t3[1],
        "shard": 0,
        "first_seq": t3[0],
        "event_id": "t-3/decision",
        "source": "tandem/router",
        "type": DECISION,
        "task_id": "t-3",
    }

    lineage = (await client.get("/v1/audit/tasks/t-3", headers=auditor)).json()
    assert [e["conflict_of"] for e in lineage["events"]] == [None, None, None, t3[0]]
    await ledger.checkpoint()
    proofs = "/v1/audit/proofs/inclusion"
    ambiguous = await client.get(proofs, params={"event_id": "t-3/decision"}, headers=auditor)
    assert ambiguous.status_code == 409
    assert "say which by its source, or its seq" in ambiguous.json()["detail"]
    chosen = await client.get(
        proofs, params={"event_id": "t-3/decision", "seq": t3[1]}, headers=auditor
    )
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["leaf_index"] == t3[1] - 1


async def test_a_clean_ledger_is_complete_with_empty_new_fields(
    audit_api: tuple[httpx.AsyncClient, Ledger],
) -> None:
    client, ledger = audit_api
    await ledger.append(
        [stage("t-1", SUBMITTED, 1), stage("t-1", SCORED, 2), decision("t-1", "ok", "t-1/d")]
    )
    report = (await client.get("/v1/audit/completeness", headers=bearer("auditor"))).json()
    assert report == {
        "complete": True,
        "decided_tasks": 1,
        "missing_stages": {},
        "events_without_task": {},
        "decided_more_than_once": {},
        "conflicting_decisions": [],
        "event_conflicts": [],
    }


async def test_completeness_reads_a_bounded_window_and_sees_its_tasks_whole(
    audit_api: tuple[httpx.AsyncClient, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last 7 days by default, 92 at most; a task with a stage in the window is judged on
    all its stages, those recorded before the window too."""
    client, ledger = audit_api
    auditor = bearer("auditor")
    now = utcnow()
    monkeypatch.setattr("tandem_audit_sink.store.utcnow", lambda: now - timedelta(days=10))
    await ledger.append(
        [stage(t, kind, n) for n, t in enumerate(("old", "edge")) for kind in (SUBMITTED, SCORED)]
        + [decision("old", "approve", "old/decision")]
    )
    monkeypatch.undo()
    await ledger.append([decision("edge", "approve", "edge/decision")])

    async def report(**params: str) -> dict[str, Any]:
        answer = await client.get("/v1/audit/completeness", params=params, headers=auditor)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    week = await report()
    assert (week["complete"], week["decided_tasks"]) == (True, 1)  # edge, seen whole
    month = await report(since=(now - timedelta(days=30)).isoformat())
    assert (month["complete"], month["decided_tasks"]) == (True, 2)
    # A window that saw only the start of the tasks (a time without its offset is 422:
    # test_inputs.py).
    before = await report(until=(now - timedelta(days=5)).isoformat())
    assert before["decided_tasks"] == 2

    for params, problem in [
        ({"since": (now - timedelta(days=93)).isoformat()}, "spans at most 92 days"),
        ({"since": now.isoformat(), "until": now.isoformat()}, "since must be before until"),
    ]:
        refused = await client.get("/v1/audit/completeness", params=params, headers=auditor)
        assert refused.status_code == 422
        assert problem in refused.json()["detail"]
