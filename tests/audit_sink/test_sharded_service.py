"""The audit sink with a ledger of two shards, on the real broker and PostgreSQL: records land in
the shard of their partition, the API proves an event up to a signed root, verification covers
every shard, and the CLI checks a proof offline with nothing but the public key."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from tandem_audit_sink.app import create_app
from tandem_audit_sink.auditor import check_inclusion, check_under_root
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.shards import ShardedLedger
from tandem_cli.audit import audit_app
from tandem_cli.audit_client import verify_now
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics
from typer.testing import CliRunner

from tests.audit_sink.harness import bearer, events, record
from tests.service_utils import committed, eventually, running

pytestmark = pytest.mark.kafka

TASKS = 24


async def test_two_shards_take_the_stream_and_prove_up_to_a_root(
    kafka_settings: KafkaSettings,
    topics: Topics,
    pg_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    from tests.kafka_utils import produce

    urls = [pg_database(), pg_database()]
    settings = AuditSettings(
        kafka=kafka_settings,
        database_url=urls[0],
        shard_database_urls=urls[1:],
        group_id=f"audit-{uuid.uuid4().hex}",
        batch_timeout_ms=50,
        checkpoint_every=5,
        checkpoint_seconds=0.5,
    )
    app = create_app(settings)
    ledger: ShardedLedger = app.state.ledger
    auditor = bearer("auditor")
    async with running(app) as client:
        # Keyed by task: each task's records on one of the topic's 3 partitions.
        tasks = [f"s-{n}" for n in range(TASKS)]
        await produce(
            kafka_settings.bootstrap_servers,
            topics.submitted,
            [record(events(t)["submitted"]) for t in tasks],
        )

        async def consumed() -> bool:
            done = await committed(kafka_settings, settings.group_id, topics.audited())
            return done == TASKS

        await eventually(consumed, "every task in the ledger")
        sizes = await ledger.sizes()
        assert sum(sizes) == TASKS and all(sizes), sizes  # partitions 0, 2 -> 0; 1 -> 1
        for shard in ledger.shards:
            async for page in shard.chunks():
                assert {e.partition % 2 for e in page} == {shard.shard}

        async def rooted() -> bool:
            latest = await ledger.latest_root()
            return latest is not None and sum(h.tree_size for h in latest.heads) == TASKS

        await eventually(rooted, "a root over both shards' whole trees")
        public_key = (await client.get("/v1/audit/roots/latest", headers=auditor)).json()[
            "public_key"
        ]
        for task in tasks:
            answer = await client.get(
                "/v1/audit/proofs/inclusion",
                params={"event_id": events(task)["submitted"].id},
                headers=auditor,
            )
            assert answer.status_code == 200, answer.text
            proof = answer.json()
            checkpoint = check_under_root(proof, [public_key])
            entry = check_inclusion(proof, checkpoint)
            assert entry["subject"] == task
        shard_one = await client.get(
            "/v1/audit/checkpoints/latest", params={"shard": 1}, headers=auditor
        )
        assert shard_one.json()["origin"] == "tandem-audit/shard-1"
        missing = await client.get(
            "/v1/audit/checkpoints/latest", params={"shard": 2}, headers=auditor
        )
        assert missing.status_code == 404 and "no shard 2" in missing.json()["detail"]
        verified = await verify_now(client, auditor)
        assert verified["ok"] is True and verified["tree_size"] == TASKS

        # Offline, with the proof alone: the root it carries vouches for its checkpoint.
        proof_file = tmp_path / "proof.json"
        proof_file.write_text(json.dumps(proof))
        cli = CliRunner()
        checked = cli.invoke(audit_app, ["check", str(proof_file), "--public-key", public_key])
        assert checked.exit_code == 0, checked.output
        assert f"of shard {proof['shard']} signed by key" in checked.stdout
        forged = dict(proof, shard=1 - proof["shard"])
        proof_file.write_text(json.dumps(forged))
        refused = cli.invoke(audit_app, ["check", str(proof_file), "--public-key", public_key])
        assert refused.exit_code == 1 and "does not name the proof's checkpoint" in refused.stdout
    whole = await asyncio.to_thread(
        CliRunner().invoke,
        audit_app,
        ["verify", "--database-url", urls[0], "--shard-database-url", urls[1]],
    )
    assert whole.exit_code == 0, whole.output
    assert f"OK: {TASKS} entries verified" in whole.stdout and "in all shards" in whole.stdout
