from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tandem_shared.budget_watch import BudgetWatch
from tandem_shared.telemetry import LATENCY_BUCKETS

from tandem_review_api.queue import Approval, Review
from tandem_review_api.segments import Standing
from tandem_review_api.store import QueueDepth

# A person's time on one review: seconds to an hour (the longest a claim lasts by default).
REVIEW_BUCKETS = (5, 15, 30, 60, 120, 240, 480, 900, 1800, 3600)
# The segment label of a budget kept for the task type as a whole.
WHOLE_TASK_TYPE = "all"


class OutboxMetrics:
    """The outbox as SREs watch it. The gauges are read from the database, so every replica
    reports the same; the counters are what this replica's relay did."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge(
            "tandem_outbox_depth",
            "Events written to the outbox and not yet acknowledged by Kafka.",
            registry=registry,
        )
        self.oldest_age = Gauge(
            "tandem_outbox_oldest_age_seconds",
            "How long the oldest event in the outbox has waited for Kafka (0 when none).",
            registry=registry,
        )
        self.published = Counter(
            "tandem_outbox_published",
            "Events the relay sent from the outbox and Kafka acknowledged.",
            registry=registry,
        )
        self.publish_failures = Counter(
            "tandem_outbox_publish_failures",
            "Batches the relay sent from the outbox that Kafka did not acknowledge; sent again.",
            registry=registry,
        )

    def set_backlog(self, depth: int, oldest_age_s: float) -> None:
        self.depth.set(depth)
        self.oldest_age.set(oldest_age_s)


class ReviewMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outbox = OutboxMetrics(registry)
        self.human_decisions = Counter(
            "tandem_human_decisions",
            "Approvals and decisions given by people.",
            ["task_type", "outcome", "step", "overrode_model"],
            registry=registry,
        )
        self.time_to_decision = Histogram(
            "tandem_time_to_human_decision_seconds",
            "From submission to a person's final decision.",
            ["task_type"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.sla_breaches = Counter(
            "tandem_review_sla_breaches",
            "Reviews still open at their due time, by what the policy did with them, and the"
            " queue they waited in ('(general)': the general queue).",
            ["task_type", "action", "queue"],
            registry=registry,
        )
        self.decisions_refused = Counter(
            "tandem_decisions_refused",
            "Decisions read from Kafka that claim people as their author and that no trusted "
            "key signed: dead-lettered, they close no review.",
            ["reason"],
            registry=registry,
        )
        self.time_on_task = Histogram(
            "tandem_review_active_seconds",
            "A person's time on task for one approval: from their claim to their decision,"
            " counting heartbeats; gaps longer than TANDEM_REVIEW_API_AWAY_AFTER_SECONDS count"
            " that long.",
            ["task_type"],
            buckets=REVIEW_BUCKETS,
            registry=registry,
        )
        self.flags = Counter(
            "tandem_review_flags",
            "Cases reviewers flagged for the model's owners: model_wrong, data_broken, other.",
            ["task_type", "kind"],
            registry=registry,
        )
        self.blind_approvals = Counter(
            "tandem_blind_approvals",
            "Approvals of blind reviews: whether the verdict given before the model's view was "
            "shown agreed with the model, and whether the approval after it did. Before "
            "disagreed and after agreed is a switch to the model (automation bias).",
            ["task_type", "before", "after"],
            registry=registry,
        )
        self.queue_unattended = Gauge(
            "tandem_review_queue_unattended_seconds",
            "For each named queue with reviews waiting: seconds since someone qualified for it"
            " asked for work (claim-next or a claim), or since its oldest waiting review came"
            " if later.",
            ["queue"],
            registry=registry,
        )
        self._unattended: set[str] = set()
        self.queue_depth = Gauge(
            "tandem_review_queue_depth",
            "Reviews not yet decided, by status.",
            ["status"],
            registry=registry,
        )
        segment = ["task_type", "attribute", "segment", "measure"]
        self.segment_rate = Gauge(
            "tandem_segment_rate",
            "A segment's automation rate, override rate or QA accuracy (measure) over the last"
            " TANDEM_REVIEW_API_SEGMENT_WINDOW_DAYS.",
            segment,
            registry=registry,
        )
        self.segment_gap = Gauge(
            "tandem_segment_gap",
            "A segment's rate minus its task type's, over the same window.",
            segment,
            registry=registry,
        )
        self.segment_samples = Gauge(
            "tandem_segment_samples",
            "What a segment's rate is a share of: decisions (automation), people's decisions"
            " (overrides) or QA samples reviewed (accuracy).",
            segment,
            registry=registry,
        )
        self.budget = Gauge(
            "tandem_error_budget",
            "The active policy's error budget of a task type's automatic decisions (segment"
            " all), or of a segment's where the budget is kept per segment.",
            ["task_type", "segment"],
            registry=registry,
        )
        self.budget_bound = Gauge(
            "tandem_error_budget_upper_bound",
            "The upper bound, at the budget's confidence, of the error of a task type's automatic"
            " decisions, from the QA samples of TANDEM_REVIEW_API_BUDGET_WINDOW_DAYS under the"
            " active policy version.",
            ["task_type", "segment"],
            registry=registry,
        )
        self.budget_samples = Gauge(
            "tandem_error_budget_qa_samples",
            "The QA samples behind the bound, and (errors) those people decided otherwise.",
            ["task_type", "segment", "kind"],
            registry=registry,
        )
        self.budget_breached = Gauge(
            "tandem_error_budget_breached",
            "1 when the bound passes the budget on enough samples to show it: the router then"
            " does what the policy's on_breach says.",
            ["task_type", "segment"],
            registry=registry,
        )
        self.queue_oldest = Gauge(
            "tandem_review_queue_oldest_age_seconds",
            "How long the oldest review not yet decided has waited, by status (0 when none).",
            ["status"],
            registry=registry,
        )

    def observe_decision(
        self, review: Review, approval: Approval, step: str, now: datetime, first_look: str | None
    ) -> None:
        """``first_look``: the approver's verdict before the reveal, on a blind review."""
        routed = review.routed
        model, outcome = routed.score.prediction, approval.outcome
        if approval.active_seconds is not None:
            self.time_on_task.labels(routed.task.task_type).observe(approval.active_seconds)
        self.human_decisions.labels(
            routed.task.task_type, outcome, step, str(outcome != model).lower()
        ).inc()
        if first_look is not None:
            self.blind_approvals.labels(
                routed.task.task_type, _agreement(first_look, model), _agreement(outcome, model)
            ).inc()
        if step == "decided":
            age = (now - routed.submitted_at).total_seconds()
            self.time_to_decision.labels(routed.task.task_type).observe(max(age, 0.0))

    def set_segments(self, standings: Iterable[Standing]) -> None:
        """The segments as last computed: a segment no longer among them is gone too."""
        for gauge in (self.segment_rate, self.segment_gap, self.segment_samples):
            gauge.clear()
        for s in standings:
            labels = (s.task_type, s.attribute, s.segment, s.measure)
            self.segment_rate.labels(*labels).set(s.rate)
            self.segment_gap.labels(*labels).set(s.gap)
            self.segment_samples.labels(*labels).set(s.samples)

    def set_budgets(self, watches: Iterable[BudgetWatch]) -> None:
        for gauge in (self.budget, self.budget_bound, self.budget_samples, self.budget_breached):
            gauge.clear()
        for w in watches:
            scope = (w.task_type, w.segment or WHOLE_TASK_TYPE)
            self.budget.labels(*scope).set(w.max_error)
            self.budget_bound.labels(*scope).set(w.upper_bound)
            self.budget_samples.labels(*scope, "samples").set(w.qa_samples)
            self.budget_samples.labels(*scope, "errors").set(w.errors)
            self.budget_breached.labels(*scope).set(int(w.breached))

    def set_unattended(self, unattended: dict[str, float]) -> None:
        """A queue with nothing waiting any more reads 0 (its series stays)."""
        for queue in self._unattended - unattended.keys():
            self.queue_unattended.labels(queue).set(0.0)
        for queue, seconds in unattended.items():
            self.queue_unattended.labels(queue).set(seconds)
        self._unattended |= unattended.keys()

    def set_queue_depth(self, depth: dict[str, QueueDepth]) -> None:
        for status in ("pending", "claimed", "escalated"):
            found = depth.get(status, QueueDepth(0, 0.0))
            self.queue_depth.labels(status).set(found.count)
            self.queue_oldest.labels(status).set(found.oldest_age_s)


def _agreement(verdict: str, model: str) -> str:
    return "agreed" if verdict == model else "disagreed"
