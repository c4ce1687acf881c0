"""Exactly once across a crash: the sink process is killed with SIGKILL while it appends, then
restarted; every event is in the ledger once and the ledger verifies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from tandem_audit_sink.store import Ledger
from tandem_cli.stack.process import Process, free_port
from tandem_shared.db import create_engine
from tandem_shared.envelope import Event
from tandem_shared.events import TaskSubmitted
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tests.audit_sink.harness import record
from tests.kafka_utils import produce
from tests.service_utils import committed, eventually

pytestmark = pytest.mark.kafka
TOTAL = 8000


def submitted(n: int) -> Event[TaskSubmitted]:
    task = TaskSubmitted(task_id=f"t-{n}", task_type="loan", features={"amount": float(n)})
    return Event.derived(task, source="tests/producer", subject=task.task_id, stage="submitted")


async def test_a_sink_killed_mid_batch_keeps_every_event_once(
    kafka_settings: KafkaSettings, topics: Topics, pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url = pg_database()
    await produce(
        kafka_settings.bootstrap_servers,
        topics.submitted,
        [record(submitted(n)) for n in range(TOTAL)],
    )
    group = f"audit-{uuid.uuid4().hex}"
    env = {
        "TANDEM_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "TANDEM_KAFKA_TOPIC_PREFIX": topics.prefix,
        "TANDEM_AUDIT_DATABASE_URL": url,
        "TANDEM_AUDIT_GROUP_ID": group,
        "TANDEM_AUDIT_BATCH_MAX_RECORDS": "250",
        "TANDEM_AUDIT_CHECKPOINT_EVERY": "1000",
    }
    engine = create_engine(url)

    async def stored() -> int:
        try:
            async with engine.connect() as conn:
                return int(await conn.scalar(text("SELECT count(*) FROM ledger")) or 0)
        except Exception:  # noqa: BLE001 - not migrated yet
            return 0

    def start(name: str) -> Process:
        port = {"TANDEM_AUDIT_PORT": str(free_port())}
        argv = [sys.executable, "-m", "tandem_audit_sink"]
        return Process.start(name, argv, tmp_path / f"{name}.log", env | port)

    try:
        first = start("first")
        try:
            deadline = time.monotonic() + 60
            while await stored() < TOTAL // 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            os.kill(first.pid, signal.SIGKILL)
        finally:
            first.stop()
        at_kill = await stored()
        assert 0 < at_kill < TOTAL, f"the kill came at {at_kill} of {TOTAL}"

        second = start("second")
        try:

            async def all_in() -> bool:
                return await stored() == TOTAL and (
                    await committed(kafka_settings, group, [topics.submitted]) == TOTAL
                )

            await eventually(all_in, "every event stored and committed after the restart", 90)
        finally:
            second.stop()
        async with engine.connect() as conn:
            distinct = await conn.scalar(text("SELECT count(DISTINCT event_id) FROM ledger"))
        assert distinct == TOTAL
        result = await Ledger(engine).verify(chunk_size=2000)
        assert result.ok, result.failure
        assert result.entries == TOTAL
        assert result.checkpoints >= 1  # the batches after the restart decide how many
    finally:
        await engine.dispose()
