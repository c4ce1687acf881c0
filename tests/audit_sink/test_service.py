"""The audit sink in-process on the real broker, on each database: every topic, once, in order."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from tandem_audit_sink.app import create_app
from tandem_audit_sink.auditor import check_consistency, check_inclusion
from tandem_audit_sink.checkpoint import Checkpoint
from tandem_audit_sink.ledger import AuditRecord
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.store import AppendResult, Ledger
from tandem_cli.audit_client import verify_now
from tandem_shared.envelope import Event
from tandem_shared.events import ControlChanged, DeadLetter
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.audit_sink.harness import DECISION, NOW, bearer, events, record
from tests.kafka_utils import TopicReader, ce_headers, produce
from tests.service_utils import committed, eventually, running

pytestmark = pytest.mark.kafka


async def test_every_topic_lands_once_and_a_task_reads_back_in_order(
    kafka_settings: KafkaSettings, topics: Topics, database_url: str
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    settings = AuditSettings(
        kafka=kafka_settings,
        database_url=database_url,
        group_id=f"audit-{uuid.uuid4().hex}",
        batch_timeout_ms=50,
        checkpoint_every=3,
    )
    app = create_app(settings)
    t1 = events("t-1")
    produced = 0
    async with running(app) as client:
        auditor = bearer("auditor")

        def lineage_length(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                response = await client.get("/v1/audit/tasks/t-1", headers=auditor)
                return response.status_code == 200 and len(response.json()["events"]) >= n

            return check

        # One stage at a time, each waited for, so the ledger order is the pipeline order.
        steps: list[tuple[str, tuple[str, bytes, list[tuple[str, bytes]]]]] = [
            (topics.submitted, record(t1["submitted"])),
            (topics.scored, record(t1["scored"])),
            (
                topics.decisions,
                ("t-1", b"\x00 not json", ce_headers("tandem.decision.made.v1", "t-1")),
            ),
            (topics.decisions, record(t1["decision"])),
            (topics.feedback, record(t1["feedback"])),
        ]
        for n, (topic, item) in enumerate(steps, start=1):
            await produce(bootstrap, topic, [item])
            produced += 1
            await eventually(lineage_length(n), f"step {n} in the ledger")

        # The rest of the stream: another task, control, a dead letter, a header-less record,
        # and a redelivered event that must not be stored twice.
        control = Event(
            "control-1",
            "tests/admin",
            "policy/loan",
            ControlChanged(
                kind="policy", name="loan", value={}, changed_by="admin", changed_at=NOW
            ),
            NOW,
        )
        letter = Event(
            "letter-1",
            "tests/scoring",
            "t-2",
            DeadLetter(
                origin_topic=topics.submitted,
                origin_partition=0,
                origin_offset=9,
                origin_key="t-2",
                service="scoring",
                error="bad",
                error_type="EnvelopeError",
                payload="{}",
                headers={},
                failed_at=NOW,
            ),
            NOW,
        )
        await produce(bootstrap, topics.submitted, [record(events("t-2")["submitted"])])
        await produce(bootstrap, topics.control, [record(control)])
        await produce(bootstrap, topics.deadletter, [record(letter)])
        await produce(bootstrap, topics.routed, [("t-2", b"plain text", [])])
        await produce(bootstrap, topics.submitted, [record(t1["submitted"])])
        # for the completeness check: a decision whose task was never submitted, and a task
        # decided without a score
        t4 = events("t-4")
        await produce(bootstrap, topics.decisions, [record(events("t-3")["decision"])])
        await produce(bootstrap, topics.submitted, [record(t4["submitted"])])
        await produce(bootstrap, topics.decisions, [record(t4["decision"])])
        produced += 8
        stored = produced - 1  # the redelivery

        async def all_consumed() -> bool:
            return await committed(kafka_settings, settings.group_id, topics.audited()) == produced

        await eventually(all_consumed, "every record consumed and committed")

        report = await verify_now(client, auditor, within=60, poll=0.1)
        assert report["ok"] is True, report
        assert (report["entries"], report["tree_size"]) == (stored, stored)
        assert report["checkpoints_checked"] >= 3

        # The checkpoints are stored, published, and prove the events in them.
        latest = (await client.get("/v1/audit/checkpoints/latest", headers=auditor)).json()
        async with TopicReader(bootstrap, topics.checkpoints) as reader:

            async def published() -> bool:
                await reader.poll(0.2)
                sizes = {json.loads(r.value or b"{}").get("tree_size") for r in reader.records}
                return latest["tree_size"] in sizes

            await eventually(published, "the latest checkpoint on its topic")
        trusted = Checkpoint.of(latest)
        trusted.check([app.state.ledger.signer.public_key])
        proof = await client.get(
            "/v1/audit/proofs/inclusion",
            params={"event_id": t1["scored"].id, "tree_size": trusted.tree_size},
            headers=auditor,
        )
        assert proof.status_code == 200, proof.text
        check_inclusion(proof.json(), trusted, json.loads(t1["scored"].value()))
        first = (await client.get("/v1/audit/checkpoints", headers=auditor)).json()[0]
        consistency = await client.get(
            "/v1/audit/proofs/consistency",
            params={"first": first["tree_size"], "second": trusted.tree_size},
            headers=auditor,
        )
        older = Checkpoint.of(first)
        assert check_consistency(consistency.json(), older, [trusted.public_key]) == trusted
        unknown = await client.get(
            "/v1/audit/proofs/inclusion", params={"event_id": "nothing"}, headers=auditor
        )
        assert unknown.status_code == 404
        assert "no event 'nothing'" in unknown.json()["detail"]

        complete = (await client.get("/v1/audit/completeness", headers=auditor)).json()
        assert complete == {
            "complete": False,
            "decided_tasks": 2,
            "missing_stages": {"t-4": ["tandem.task.scored.v1"]},
            "events_without_task": {"t-3": ["tandem.decision.made.v1"]},
            "decided_more_than_once": {},
            "conflicting_decisions": [],
            "event_conflicts": [],
        }

        exported = await client.get(
            "/v1/audit/export", params={"type": "tandem.task.submitted.v1"}, headers=auditor
        )
        assert exported.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in exported.text.splitlines()]
        assert sorted(e["subject"] for e in lines) == ["t-1", "t-2", "t-4"]

        lineage = (await client.get("/v1/audit/tasks/t-1", headers=auditor)).json()
        assert lineage["task_id"] == "t-1"
        got = [(e["type"], e["topic"], e["event_id"]) for e in lineage["events"]]
        # Pipeline order: the stages first, then what is not a stage (here the unparsed record).
        assert got == [
            ("tandem.task.submitted.v1", topics.submitted, t1["submitted"].id),
            ("tandem.task.scored.v1", topics.scored, t1["scored"].id),
            ("tandem.decision.made.v1", topics.decisions, t1["decision"].id),
            ("tandem.feedback.recorded.v1", topics.feedback, t1["feedback"].id),
            ("tandem.unparsed", topics.decisions, got[4][2]),
        ]
        seqs = [e["seq"] for e in lineage["events"]]
        assert len(set(seqs)) == len(seqs)
        first, unparsed = lineage["events"][0], lineage["events"][4]
        assert first["data"] == json.loads(t1["submitted"].value())  # the data as it was sent
        assert first["source"] == "tests/submitted"
        assert datetime.fromisoformat(first["time"]) == t1["submitted"].time
        assert unparsed["data"]["value"] == "\x00 not json"
        scored = lineage["events"][1]
        assert scored["model"] == {"name": "loan", "version": "1"}
        assert lineage["events"][2]["policy"] == {"name": "loan", "version": 3}
        assert "not JSON" in unparsed["data"]["reason"]

        t2 = (await client.get("/v1/audit/tasks/t-2", headers=auditor)).json()
        assert [e["type"] for e in t2["events"]] == [
            "tandem.task.submitted.v1",
            "tandem.deadletter.recorded.v1",
            "tandem.unparsed",
        ]
        policy = (await client.get("/v1/audit/tasks/policy/loan", headers=auditor)).json()
        assert [e["event_id"] for e in policy["events"]] == ["control-1"]
        assert (await client.get("/v1/audit/tasks/nobody", headers=auditor)).status_code == 404

        reviewer = bearer("reviewer")
        assert (await client.get("/v1/audit/tasks/t-1", headers=reviewer)).status_code == 403
        assert (await client.get("/v1/audit/verify", headers=reviewer)).status_code == 403
        assert (await client.get("/v1/audit/verify")).status_code == 401

        metrics = (await client.get("/metrics")).text
        assert f"tandem_audit_tree_size {float(stored)}" in metrics
        assert f'tandem_audit_duplicates_total{{topic="{topics.submitted}"}} 1.0' in metrics

    # A replay from the start (a new consumer group) adds nothing: every id is already there.
    replay = create_app(settings.model_copy(update={"group_id": f"replay-{uuid.uuid4().hex}"}))
    async with running(replay) as client:

        async def replayed() -> bool:
            lines = (await client.get("/metrics")).text.splitlines()
            counts = [line for line in lines if line.startswith("tandem_audit_duplicates_total{")]
            return sum(float(line.rsplit(" ", 1)[1]) for line in counts) >= produced

        await eventually(replayed, "the replay to be deduplicated")
        verified = await verify_now(client, bearer("auditor"), within=60, poll=0.1)
        assert verified["ok"] is True
        assert verified["entries"] == stored


async def test_offsets_wait_for_the_database_commit(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    """While the database is down the batch is retried and nothing is committed to Kafka."""
    settings = AuditSettings(
        kafka=kafka_settings,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}",
        group_id=f"audit-{uuid.uuid4().hex}",
        batch_timeout_ms=50,
        retry_backoff_s=0.05,
    )
    app = create_app(settings)
    ledger: Ledger = app.state.ledger.shards[0]
    append = ledger.append
    down = {"calls": 0, "failures": 0, "on": True}

    async def flaky(records: Sequence[AuditRecord]) -> AppendResult:
        down["calls"] += 1
        if down["on"]:
            down["failures"] += 1
            raise OperationalError("INSERT INTO ledger", {}, Exception("database is locked"))
        return await append(records)

    ledger.append = flaky  # type: ignore[method-assign]
    async with running(app) as client:
        await produce(
            kafka_settings.bootstrap_servers, topics.decisions, [record(events("t-9")["decision"])]
        )

        async def failed_twice() -> bool:
            return down["failures"] >= 2

        await eventually(failed_twice, "the append to fail")
        assert await committed(kafka_settings, settings.group_id, topics.audited()) == 0
        assert await ledger.size() == 0
        down["on"] = False

        async def stored() -> bool:
            return await committed(kafka_settings, settings.group_id, topics.audited()) == 1

        await eventually(stored, "the record to be stored and committed")
        lineage = await client.get("/v1/audit/tasks/t-9", headers=bearer("auditor"))
        assert [e["type"] for e in lineage.json()["events"]] == [DECISION]
        assert down["calls"] == down["failures"] + 1


async def test_the_sink_verifies_itself_and_reports_tampering(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    """Each period the sink verifies what was added since its last good verification, and
    every so many periods the whole ledger (here every time)."""
    settings = AuditSettings(
        kafka=kafka_settings,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}",
        group_id=f"audit-{uuid.uuid4().hex}",
        batch_timeout_ms=50,
        checkpoint_every=2,
        verify_seconds=0.3,
        verify_whole_every=1,
    )
    app = create_app(settings)
    async with running(app) as client:
        for task in ("v-1", "v-2"):
            await produce(
                kafka_settings.bootstrap_servers,
                topics.submitted,
                [record(events(task)["submitted"])],
            )

        async def verified(size: float) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                text = (await client.get("/metrics")).text
                return f"tandem_audit_verified_tree_size {size}" in text

            return check

        await eventually(await verified(2.0), "both events verified by the sink itself")
        ledger: Ledger = app.state.ledger.shards[0]
        async with ledger.engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER ledger_no_update"))
            await conn.execute(text("UPDATE ledger SET source = 'forged' WHERE seq = 2"))

        async def caught() -> bool:
            text_ = (await client.get("/metrics")).text
            return "tandem_audit_verify_failures_total 0.0" not in text_

        await eventually(caught, "the tampering reported")
        latest = (await client.get("/v1/audit/verify", headers=bearer("auditor"))).json()
        assert (latest["ok"], latest["failed_seq"], latest["requested"]) == (False, 2, False)
