"""The audit-sink service: every Tandem topic into the ledger, plus the auditor's API."""

from __future__ import annotations

from fastapi import FastAPI
from tandem_shared.db import create_engine
from tandem_shared.service import ServiceRuntime

from tandem_audit_sink.api import router
from tandem_audit_sink.consumer import AuditHandler, capture
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.store import Ledger, migrate
from tandem_audit_sink.telemetry import AuditMetrics


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    settings = settings or AuditSettings()
    runtime = ServiceRuntime("audit-sink", settings)
    metrics = AuditMetrics(runtime.registry)
    engine = create_engine(settings.database_url)
    ledger = Ledger(engine)

    async def prepare() -> None:
        await migrate(settings.database_url)
        head = await ledger.head()
        if head is not None:
            metrics.head(head)

    async def close() -> None:
        await engine.dispose()

    runtime.on_start.append(prepare)
    runtime.on_stop.append(close)
    # Its own decoder refuses nothing: an invalid record is stored raw, never dead-lettered.
    runtime.add_consumer(
        settings.group_id, runtime.topics.all(), capture, AuditHandler(ledger, metrics)
    )
    app = runtime.app("Tandem audit sink", [router])
    app.state.ledger = ledger
    app.state.audit_metrics = metrics
    return app
