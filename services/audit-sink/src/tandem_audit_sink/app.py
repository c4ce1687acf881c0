"""The audit-sink service: every Tandem topic into the ledger, plus the auditor's API."""

from __future__ import annotations

import functools
import logging

from fastapi import FastAPI
from tandem_shared.db import answer_outages, create_engine
from tandem_shared.service import ServiceRuntime

from tandem_audit_sink import verify_api
from tandem_audit_sink.api import router
from tandem_audit_sink.checkpoint import Signer
from tandem_audit_sink.consumer import AuditHandler, capture, checkpoint_event
from tandem_audit_sink.privacy import Redactor
from tandem_audit_sink.settings import AuditSettings
from tandem_audit_sink.shards import ShardedLedger
from tandem_audit_sink.store import migrate
from tandem_audit_sink.telemetry import AuditMetrics
from tandem_audit_sink.verification import Verifications

log = logging.getLogger(__name__)


def signer_of(settings: AuditSettings) -> Signer:
    if settings.signing_key is not None:
        return Signer.from_text(settings.signing_key.get_secret_value(), settings.origin)
    signer = Signer.generate(settings.origin)
    log.warning(
        "no TANDEM_AUDIT_SIGNING_KEY: checkpoints are signed with a key made for this process "
        "only (key id %s); set one so that auditors can trust them",
        signer.key_id,
    )
    return signer


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    settings = settings or AuditSettings()
    runtime = ServiceRuntime("audit-sink", settings)
    metrics = AuditMetrics(runtime.registry)
    engines = [create_engine(url) for url in settings.database_urls]
    ledger = ShardedLedger.of(
        engines, signer_of(settings), settings.checkpoint_every, settings.origin
    )
    privacy_key = settings.privacy_key.get_secret_value() if settings.privacy_key else ""
    redact = Redactor(settings.private_fields, privacy_key.encode())
    topics = runtime.topics

    async def prepare() -> None:
        if settings.migrate_on_start:
            for url in settings.database_urls:
                await migrate(url)
        metrics.sizes(dict(enumerate(await ledger.sizes())))
        # A checkpoint stored just before a crash may never have been published: publish each
        # shard's newest again (readers know one by its origin and tree size).
        latest = [await shard.latest_checkpoint() for shard in ledger.shards]
        await runtime.publisher.publish(
            [checkpoint_event(c, topics.checkpoints) for c in latest if c is not None]
        )

    async def checkpoint_on_time() -> None:
        made, _ = await ledger.checkpoint()
        for checkpoint in made:
            metrics.checkpointed(checkpoint)
        await runtime.publisher.publish([checkpoint_event(c, topics.checkpoints) for c in made])

    # What was added since the last good verification, and now and then everything, besides
    # what is asked for: a tampered entry shows as an alert on tandem_audit_verify_failures_total.
    verifications = Verifications(
        ledger, metrics, settings.verify_chunk_size, settings.verify_whole_every
    )

    async def close() -> None:
        await verifications.close()
        for engine in engines:
            await engine.dispose()

    runtime.on_start.append(prepare)
    runtime.on_stop.append(close)
    runtime.every(settings.checkpoint_seconds, checkpoint_on_time, "signing a checkpoint")
    runtime.every(settings.verify_seconds, verifications.on_time, "verifying the ledger")
    # Its own decoder refuses nothing: an invalid record is stored raw, never dead-lettered.
    runtime.add_consumer(
        settings.group_id,
        topics.audited(),
        functools.partial(capture, redact=redact),
        AuditHandler(ledger, metrics, topics.checkpoints),
    )
    app = runtime.app("Tandem audit sink", [router, verify_api.router])
    app.state.ledger = ledger
    app.state.verifications = verifications
    app.state.redact = redact
    answer_outages(app, "the ledger's database")
    return app
