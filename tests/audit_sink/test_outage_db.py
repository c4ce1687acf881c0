"""A PostgreSQL restart while the audit sink runs: its batches wait for the database, nothing
is dead-lettered, and every record ends up in the ledger once, which verifies."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from tandem_audit_sink.app import create_app
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.store import Ledger
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.audit_sink.harness import events, record
from tests.audit_sink.outage import outage, postgres_of_its_own
from tests.kafka_utils import TopicReader, produce
from tests.service_utils import committed, eventually, failures, running

pytestmark = pytest.mark.kafka


async def test_a_postgres_restart_holds_the_ledger_back_and_dead_letters_nothing(
    kafka_settings: KafkaSettings, topics: Topics, work_dir: Path
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    with postgres_of_its_own(work_dir) as server:
        url = await asyncio.to_thread(server.create_database, "audit")
        settings = AuditSettings(
            kafka=kafka_settings,
            database_url=url,
            group_id=f"audit-{uuid.uuid4().hex}",
            batch_timeout_ms=50,
            retry_backoff_s=0.05,
            checkpoint_every=5,
        )
        app = create_app(settings)
        ledger: Ledger = app.state.ledger.shards[0]
        tasks = [events(f"o-{n}") for n in range(12)]

        async def all_committed(count: int) -> None:
            async def check() -> bool:
                return await committed(kafka_settings, settings.group_id, topics.audited()) == count

            await eventually(check, f"{count} records in the ledger and committed")

        async with running(app) as client:
            await produce(bootstrap, topics.submitted, [record(t["submitted"]) for t in tasks[:4]])
            await all_committed(4)

            async with outage(server, seconds=4):
                await produce(
                    bootstrap, topics.submitted, [record(t["submitted"]) for t in tasks[4:]]
                )
                await produce(bootstrap, topics.decisions, [record(t["decision"]) for t in tasks])

                async def held_back() -> bool:
                    return (await client.get("/readyz")).status_code != 200

                await eventually(held_back, "the sink to find the database down", timeout=20)
                assert await committed(kafka_settings, settings.group_id, topics.audited()) == 4

            total = len(tasks) * 2
            await all_committed(total)
            metrics = (await client.get("/metrics")).text
            assert failures(metrics) == []
            assert (await client.get("/readyz")).status_code == 200  # the pool came back
            assert await ledger.size() == total
            verified = await ledger.verify()
            assert verified.ok, verified.failure
            assert verified.entries == total

    async with TopicReader(bootstrap, topics.deadletter) as letters:
        assert await letters.poll(1.0) == []
