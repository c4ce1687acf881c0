"""What people do with reviews, and producers with tasks over HTTP, orchestrated: the rules
(queue.py), the storage (store.py) and the events each change publishes, written to the outbox
in the same transaction (outbox.py sends them on)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import trace
from tandem_shared.auth import Principal
from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import DecisionMade, TaskSubmitted
from tandem_shared.kafka import Outgoing, Publisher, Record
from tandem_shared.telemetry import context_from_traceparent, continue_trace
from tandem_shared.topics import Topics

from tandem_review_api import queue, stats
from tandem_review_api.authorship import SOURCE, DecisionSigner, signed
from tandem_review_api.claimed import ClaimedReviews
from tandem_review_api.errors import Conflict, NotFound
from tandem_review_api.hotpath import Approved, Snapshot
from tandem_review_api.outbox import Outbox
from tandem_review_api.store import ReviewStore
from tandem_review_api.telemetry import ReviewMetrics

# A replica writes that someone asked a named queue for work at most this often.
ACTIVITY_EVERY_S = 15.0


@dataclass(frozen=True)
class Claim:
    review_id: str
    claimed_by: str
    lease_expires_at: datetime
    blind: bool  # the holder records a first look before the model's view is shown


@dataclass(frozen=True)
class DecisionResult:
    review_id: str
    status: str
    outcome: str | None
    approvals: int
    required_approvals: int


class ReviewService:
    def __init__(
        self,
        store: ReviewStore,
        outbox: Outbox,
        topics: Topics,
        limits: queue.ClaimLimits,
        tracer: trace.Tracer,
        metrics: ReviewMetrics,
        signer: DecisionSigner | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.topics = topics
        self.limits = limits
        self.tracer = tracer
        self.metrics = metrics
        self.signer = signer
        self.claimed = ClaimedReviews()
        self._noted: dict[str, float] = {}  # named queue -> when its activity was last written

    async def _asking(self, who: Principal) -> None:
        """``who`` asks for work: someone qualified is about in each of their named queues.
        Written at most every ACTIVITY_EVERY_S a queue by this replica."""
        clock = time.monotonic()
        due = sorted(
            q
            for q in who.qualifications
            if clock - self._noted.get(q, -math.inf) >= ACTIVITY_EVERY_S
        )
        if due:
            self._noted.update(dict.fromkeys(due, clock))
            await self.store.note_activity(due, utcnow())

    async def claim(self, review_id: str | None, who: Principal) -> Claim:
        """Claim a review, or (``review_id`` None) the most urgent one ``who`` may take;
        NotFound when none is waiting."""
        await self._asking(who)
        if review_id is None:
            return await self._claim_next(who)
        self.claimed.forget(review_id)
        now = utcnow()
        async with self.store.transaction() as s:
            _, review = await self.store.load(s, review_id)
            queue.check_claim(review, who, now)
            held = await self.store.claims_held(s, who.subject, now)
            self.limits.check_count(review, who, held, now)
            expires = self.limits.lease_until(review, who, now)
            active = self.limits.active(review, who, now)
            await self.store.claim(s, review, who.subject, now, expires, active)
        return Claim(review_id, who.subject, expires, review.routed.blind)

    async def _claim_next(self, who: Principal) -> Claim:
        """One statement finds, checks and claims the review (the rules of queue.check_claim
        and the claim limit in its WHERE); only when it claims nothing is it asked why."""
        now = utcnow()
        expires = self.limits.new_lease(now)
        claimed = await self.store.claim_next(who, now, expires, self.limits.per_reviewer)
        if claimed is None:
            waiting, held = await self.store.unclaimed_why(who, now)
            if waiting:
                self.limits.check_held(held)
            raise NotFound("no review is waiting for you")
        review_id, blind, snapshot = claimed
        if snapshot is not None:
            self.claimed.remember(snapshot)
        return Claim(review_id, who.subject, expires, blind)

    async def heartbeat(self, review_id: str, who: Principal) -> Claim:
        """Extend the claimant's lease: a reviewer still at work keeps the review."""
        self.claimed.forget(review_id)
        now = utcnow()
        async with self.store.transaction() as s:
            _, review = await self.store.load(s, review_id)
            self._check_holder(review, who, now)
            expires = self.limits.lease_until(review, who, now)
            active = self.limits.active(review, who, now)
            await self.store.extend_lease(s, review, who.subject, expires, now, active)
        return Claim(review_id, who.subject, expires, review.routed.blind)

    async def escalate(self, review_id: str, who: Principal, reason: str) -> None:
        """The claimant hands the review to the senior queue, saying why."""
        self.claimed.forget(review_id)
        now = utcnow()
        async with self.store.transaction() as s:
            _, review = await self.store.load(s, review_id)
            self._check_holder(review, who, now)
            await self.store.escalate(s, review_id, f"{who.subject}: {reason}")

    @staticmethod
    def _check_holder(review: queue.Review, who: Principal, now: datetime) -> None:
        if not (review.lease_held(now) and review.claimed_by == who.subject):
            raise Conflict(f"you do not hold the claim on review {review.review_id}")

    async def release(self, review_id: str, who: Principal) -> None:
        self.claimed.forget(review_id)
        now = utcnow()
        async with self.store.transaction() as s:
            _, review = await self.store.load(s, review_id)
            self._check_holder(review, who, now)
            await self.store.release(s, review_id, "escalated" if review.escalated else "pending")

    async def flag(
        self, review_id: str, who: Principal, kind: str, note: str | None
    ) -> dict[str, Any]:
        """``who`` flags a review they may see for the model's owners; the flag as kept."""
        raised = await self.store.add_flag(review_id, who, kind, note, utcnow())
        self.metrics.flags.labels(raised["task_type"], kind).inc()
        return raised

    async def first_look(self, review_id: str, who: Principal, outcome: str) -> Mapping[str, Any]:
        """``who``'s verdict on a blind review they hold, before its model view is shown to
        them; kept once, and carried into their approval's feedback and the decision. The
        review's row, now revealed to them."""
        now = utcnow()
        read = self.claimed.peek(review_id, who, now) or await self.store.snapshot(review_id)
        queue.check_first_look(read.review, who, outcome, now)
        row = await self.store.keep_first_look(review_id, who.subject, outcome, now)
        if row is not None:
            return {**row, "revealed": True}
        # Nothing kept: say why, from the review as it is now.
        review = (await self.store.snapshot(review_id)).review
        queue.check_first_look(review, who, outcome, utcnow())
        if who.subject in await self.store.first_looks(review_id):
            raise Conflict(f"{who.subject} recorded a first look on review {review_id} already")
        raise Conflict(f"review {review_id} changed while recording your first look; try again")

    async def decide(
        self,
        review_id: str,
        who: Principal,
        outcome: str,
        rationale: str,
        rating: queue.Rating = queue.UNRATED,
    ) -> DecisionResult:
        """Record ``who``'s approval and what it leads to: the review as claimed (or read, when
        this replica did not hand it out), the rules checked, and everything written at once,
        guarded by the claim as read. When the claim changed in between (a heartbeat, say),
        the review is read and checked again, once."""
        read = self.claimed.take(review_id, who, utcnow())
        for _ in range(2):
            read = read or await self.store.snapshot(review_id)
            decided = await self._decide_once(read, who, outcome, rationale, rating)
            if decided is not None:
                return decided
            read = None
        raise Conflict(f"review {review_id} changed while deciding; try again")

    async def _decide_once(
        self, read: Snapshot, who: Principal, outcome: str, rationale: str, rating: queue.Rating
    ) -> DecisionResult | None:
        now = utcnow()
        review = read.review
        # Read only for a blind review: one more round trip, for the few that are.
        blind = await self.store.first_looks(review.review_id) if review.routed.blind else {}
        queue.check_decision(review, who, outcome, now, blind)
        active = queue.active_after(review, now, self.limits.away_after)
        approval = queue.Approval(
            who.subject, outcome, rationale, now, review.claimed_at, active, rating
        )
        step = queue.next_step(review, approval, who)
        task = review.routed.task
        outgoing = [
            Outgoing(
                self.topics.feedback,
                Event.derived(
                    queue.feedback(review, approval, now, blind.get(who.subject)),
                    source=SOURCE,
                    subject=task.task_id,
                    stage=f"feedback/{who.subject}",
                ),
            )
        ]
        decision = None
        # A QA sample was already decided by the model: the verdict is feedback only.
        if step.kind == "decided" and not review.routed.qa_sample:
            given = (*review.approvals, approval)
            looks = queue.first_looks_of(review, approval, blind)
            decision = queue.decision(review, outcome, rationale, given, now, first_looks=looks)
            outgoing.append(self._decision(decision))
        events = self.outbox.rows(self._records(outgoing, read.traceparent))
        back_to = "escalated" if review.escalated else "pending"
        change = Approved(review, approval, step.kind, back_to, decision, events, now)
        if not await self.store.approve(change):
            return None
        self.outbox.notify()
        self.metrics.observe_decision(review, approval, step.kind, now, blind.get(who.subject))
        return DecisionResult(
            review.review_id,
            step.kind,
            step.outcome,
            len(review.approvals) + 1,
            review.routed.required_approvals,
        )

    async def handle_overdue(self, now: datetime | None = None, limit: int = 100) -> int:
        """Reviews still open at their due time, each handled once as its policy says:
        escalated to a senior, left pending, or decided with the fallback outcome. Each is an
        SLA breach. Returns how many were handled."""
        now = now or utcnow()
        async with self.store.transaction() as s:
            due = await self.store.overdue(s, now, limit)
        for review_id in due:
            async with self.store.transaction() as s:
                row, review = await self.store.load(s, review_id)  # locked: one replica wins
                if row["breached_at"] is not None or review.status == "decided":
                    continue
                step = queue.overdue_step(review)
                await self.store.mark_breached(s, review_id, now)
                if step == "escalate":
                    await self.store.escalate(s, review_id)
                elif step == "fallback":
                    decision = queue.fallback_decision(review, now)
                    await self.store.decide_by_policy(s, review, decision, now)
                    records = self._records([self._decision(decision)], row["traceparent"])
                    await self.outbox.add(s, records)
            routed = review.routed
            self.metrics.sla_breaches.labels(
                routed.task.task_type, step, stats.queue_label(routed.queue)
            ).inc()
        return len(due)

    async def submit(self, task: TaskSubmitted) -> bool:
        """HTTP ingress: the task and its event in one transaction; False when its id is
        already known (nothing is done)."""
        now = utcnow()
        event = Event.derived(task, source=SOURCE, subject=task.task_id, stage="submitted")
        # Made in the request's span: the task's trace starts with the producer's call.
        records = [Publisher.record(Outgoing(self.topics.submitted, event))]
        async with self.store.transaction() as s:
            if not await self.store.add_submitted(s, task, now):
                return False
            await self.outbox.add(s, records)
        return True

    def _decision(self, decision: DecisionMade) -> Outgoing:
        """The decision's record, signed: only then does it count as the review API's."""
        event = Event.derived(decision, source=SOURCE, subject=decision.task_id, stage="decision")
        return Outgoing(self.topics.decisions, signed(event, self.signer))

    def _records(self, outgoing: list[Outgoing], traceparent: str | None) -> list[Record]:
        """The records to send, made inside the task's own trace (linked to the HTTP request
        that caused them), so their traceparent carries the task's trace on."""
        request_span = trace.get_current_span().get_span_context()
        links: Any = [trace.Link(request_span)] if request_span.is_valid else []
        with continue_trace(
            self.tracer,
            "review decide",
            context_from_traceparent(traceparent),
            links=links,
            kind=trace.SpanKind.PRODUCER,
        ):
            return [Publisher.record(o) for o in outgoing]
