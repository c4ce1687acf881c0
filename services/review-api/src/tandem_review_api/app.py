from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from tandem_policy.lifecycle import active_policy
from tandem_shared.control import budget_change, publish_change, read_control
from tandem_shared.db import answers, upgrade
from tandem_shared.envelope import utcnow
from tandem_shared.kafka import event_decoder
from tandem_shared.service import ServiceRuntime

from tandem_review_api import admin, errors, incidents, live, policies, risks, web
from tandem_review_api.api import router
from tandem_review_api.authorship import DecisionSigner, DecisionTrust
from tandem_review_api.consumer import ACCEPTED, QueueMaterializer
from tandem_review_api.database import review_engines
from tandem_review_api.error_budgets import changed, watches
from tandem_review_api.history import History
from tandem_review_api.outbox import Outbox, Relay, sender
from tandem_review_api.queue import ClaimLimits
from tandem_review_api.references import References
from tandem_review_api.reviews import ReviewService
from tandem_review_api.segments import standings
from tandem_review_api.settings import ReviewApiSettings
from tandem_review_api.store import ReviewStore
from tandem_review_api.telemetry import ReviewMetrics

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ReviewApiSettings | None = None) -> FastAPI:
    settings = settings or ReviewApiSettings()
    runtime = ServiceRuntime("review-api", settings)
    engines = review_engines(settings.database_url, settings.database_connections)
    engine = engines.transactions
    store = ReviewStore(engine, engines.statements)
    outbox = Outbox(engine, statements=engines.statements)
    metrics = ReviewMetrics(runtime.registry)
    trust = DecisionTrust.from_settings(settings)
    trust.on_refused = lambda reason: metrics.decisions_refused.labels(reason).inc()
    relay = Relay(
        outbox, sender(runtime.publisher), metrics.outbox, poll_s=settings.outbox_poll_seconds
    )
    reviews = ReviewService(
        store,
        outbox,
        runtime.topics,
        ClaimLimits(
            lease=timedelta(seconds=settings.lease_seconds),
            longest=timedelta(seconds=settings.longest_claim_seconds),
            per_reviewer=settings.claims_per_reviewer,
            away_after=timedelta(seconds=settings.away_after_seconds),
        ),
        runtime.tracer,
        metrics,
        DecisionSigner.from_settings(settings),
    )
    topics = runtime.topics
    runtime.add_consumer(
        settings.group_id,
        # Not the submitted topic: scoring owns its validation and dead-letters what is bad there.
        [topics.routed, topics.decisions],
        event_decoder(ACCEPTED),
        QueueMaterializer(store, trust),
        # People keep claiming and deciding while Kafka is down (the outbox holds what they
        # publish): the API stays in its Service, whatever the loop waits for.
        gates_readiness=False,
    )
    # What it cannot serve without: its database.
    runtime.readiness.append(answers(engine))

    async def refresh_gauges() -> None:
        now = utcnow()
        metrics.set_queue_depth(await store.queue_depth(now))
        metrics.set_unattended(await store.unattended(now))
        backlog = await outbox.backlog(now)
        metrics.outbox.set_backlog(backlog.depth, backlog.oldest_age_s)

    async def compare_segments() -> None:
        until = utcnow()
        since = until - timedelta(days=settings.segment_window_days)
        decisions, facts, _, _ = await store.report_facts(since, until)
        metrics.set_segments(standings(decisions, facts, settings.segment_values_max))

    async def watch_budgets() -> None:
        now = utcnow()
        kafka = settings.kafka.bootstrap_servers
        held = await read_control(kafka, runtime.topics, runtime.control.trust)
        policy = active_policy(held)
        if policy is None:  # none applied on the control topic: no budget to watch
            metrics.set_budgets([])
            return
        since = now - timedelta(days=settings.budget_window_days)
        found = watches(policy, await store.qa_reviews(since, now), now)
        metrics.set_budgets(found)
        for watch in changed(found, held):
            change = budget_change(watch, f"tandem/{runtime.name}")
            await publish_change(runtime.publisher, runtime.topics, change, runtime.control.signer)

    async def handle_overdue() -> None:
        await reviews.handle_overdue()

    async def on_start() -> None:
        await upgrade(settings.database_url, MIGRATIONS)
        await refresh_gauges()
        # Not part of readiness: during a Kafka outage the API keeps serving, the outbox fills.
        relay.start()

    history = History(settings.audit_url, settings.audit_timeout_seconds)

    async def on_stop() -> None:
        await relay.stop()
        await history.close()
        await engines.dispose()

    runtime.every(5, refresh_gauges, "refreshing the queue and outbox gauges")
    runtime.every(settings.overdue_check_seconds, handle_overdue, "handling overdue reviews")
    runtime.every(settings.segment_refresh_seconds, compare_segments, "comparing segments")
    runtime.every(settings.budget_refresh_seconds, watch_budgets, "watching error budgets")

    runtime.on_start.append(on_start)
    runtime.on_stop.append(on_stop)
    app = runtime.app(
        "Tandem review API",
        [router, admin.router, policies.router, risks.router, incidents.router, web.router],
    )
    app.state.store = store
    app.state.reviews = reviews
    app.state.outbox = outbox
    app.state.relay = relay
    app.state.review_metrics = metrics
    app.state.references = References(settings.models_dir)
    app.state.history = history
    app.state.subscribers = live.Subscribers(settings.events_max_subscribers)
    errors.install(app)
    return app
