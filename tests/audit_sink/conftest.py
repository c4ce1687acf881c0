"""Factories for ledger records and a migrated ledger on each database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tandem_audit_sink.checkpoint import Signer
from tandem_audit_sink.ledger import AuditRecord
from tandem_audit_sink.store import Ledger, migrate
from tandem_shared.db import create_engine
from tandem_shared.kafka import Incoming

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIGNER = Signer.generate("tests")
CHECKPOINT_EVERY = 4


def record(n: int, task: str | None = None, **overrides: Any) -> AuditRecord:
    task_id = task or f"task-{n}"
    fields: dict[str, Any] = {
        "event_id": f"event-{n}",
        "event_type": "tandem.task.submitted.v1",
        "source": "tests/producer",
        "subject": task_id,
        "event_time": T0 + timedelta(seconds=n),
        "topic": "tandem.tasks.submitted",
        "partition": n % 3,
        "offset": n,
        "key": task_id,
        "data": {"task_id": task_id, "task_type": "loan", "features": {"amount": n}},
        "headers": {"ce_id": f"event-{n}"},
    }
    fields.update(overrides)
    return AuditRecord(**fields)


def incoming(item: AuditRecord) -> Incoming[AuditRecord]:
    """A record as the consumer loop hands it to the handler."""
    return Incoming(item, item.topic, item.partition, item.offset, item.key, (), 0, b"")


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        yield Ledger(engine, SIGNER, CHECKPOINT_EVERY)
    finally:
        await engine.dispose()
