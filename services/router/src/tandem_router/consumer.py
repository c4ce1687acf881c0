"""The batch handler: scored tasks in, automatic decisions and review requests out."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime

from tandem_policy.policy import BudgetScope, Fired, Policy, Routing, decide
from tandem_shared.envelope import Event
from tandem_shared.events import DecisionMade, EventData, TaskRouted, TaskScored
from tandem_shared.kafka import Incoming, Outgoing, Record, Rejected, Result
from tandem_shared.telemetry import guarded
from tandem_shared.topics import Topics

from tandem_router import seen_log
from tandem_router.control import RoutingControl
from tandem_router.dedupe import SeenTasks
from tandem_router.telemetry import RouterMetrics

log = logging.getLogger(__name__)

SOURCE = "tandem/router"
UNKNOWN_TASK_TYPE = "other"  # metric label for task types the policy does not name


@dataclasses.dataclass(frozen=True)
class BatchView:
    """What the control topic says, taken once for a whole batch."""

    policy: Policy
    unreadable: bool
    drifting: frozenset[tuple[str, str]]  # (model, version) pairs in drift alarm
    breached: frozenset[BudgetScope]  # error budgets breached (Policy.budget_scope)


class RouterHandler:
    def __init__(
        self, control: RoutingControl, topics: Topics, metrics: RouterMetrics, seen: SeenTasks
    ) -> None:
        self.control = control
        self.topics = topics
        self.metrics = metrics
        self.seen = seen

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        # One policy and one view of the control topic for the whole batch.
        view = BatchView(
            policy=self.control.policy,
            unreadable=self.control.unreadable,
            drifting=self.control.drifting_models(),
            breached=self.control.breached_budgets(),
        )
        scored = [item.item.data for item in batch if isinstance(item.item.data, TaskScored)]
        # The rules are tested for the whole batch at once: a numpy comparison per rule.
        fired = iter(view.policy.fired([s.task for s in scored]))
        routed: list[tuple[str, Routing]] = []
        results: list[Result] = []
        for item in batch:
            data = item.item.data
            if isinstance(data, TaskScored):
                results.append(self.route(item, data, view, next(fired), routed))
            else:
                results.append(Rejected(f"expected a scored task, got {type(data).__name__}"))
        with guarded("routing"):
            self.metrics.routed(routed)
        return results

    def route(
        self,
        item: Incoming[Event[EventData]],
        scored: TaskScored,
        view: BatchView,
        fired: Fired | None,
        routed: list[tuple[str, Routing]],
    ) -> Result:
        """The task's outputs; its routing is added to ``routed``, to be counted."""
        task, policy = scored.task, view.policy
        label = task.task_type if task.task_type in policy.task_types else UNKNOWN_TASK_TYPE
        if not self.seen.claim(task.task_id, item.partition, item.offset):
            log.info("task %s already routed; duplicate dropped", task.task_id)
            with guarded("duplicates"):
                self.metrics.duplicates.labels(label).inc()
            return []
        # Routing time is the scoring time, so every output is a function of the input alone:
        # a replay yields identical events, not just identical ids.
        try:
            routing = decide(
                policy,
                scored,
                now=scored.scored_at,
                kill_switch=self.control.killed(task.task_type),
                drifting=(scored.score.model.name, scored.score.model.version) in view.drifting,
                control_unreadable=view.unreadable,
                budget_breached=bool(view.breached) and policy.budget_scope(task) in view.breached,
                fired=fired,
            )
        except OverflowError:
            # A scoring time at the calendar's end has no due time after it. Rejected here,
            # or the batch would fail, be retried, and be handled record by record to find it.
            return Rejected(f"scored_at {scored.scored_at.isoformat()} leaves no due time")
        routed.append((label, routing))
        # Committed with the outputs, or not at all: the task stays routed across restarts.
        remembered = seen_log.entry(
            self.topics.router_seen, task.task_id, item.partition, item.offset
        )
        if routing.route != "auto":
            return [self._routed(scored, routing), remembered]
        outputs: list[Outgoing | Record] = [self._decision(scored, routing), remembered]
        if routing.qa_sample:
            qa = dataclasses.replace(routing, route="review", reasons=("qa_sample",))
            outputs.append(self._routed(scored, qa))
        return outputs

    def _decision(self, scored: TaskScored, routing: Routing) -> Outgoing:
        decision = DecisionMade(
            task_id=scored.task.task_id,
            task_type=scored.task.task_type,
            outcome=routing.outcome,
            decided_by="model",
            confidence=scored.score.confidence,
            model=scored.score.model,
            policy=routing.policy,
            submitted_at=scored.submitted_at,
            decided_at=scored.scored_at,
            segment=dict(routing.segment),
        )
        return Outgoing(
            self.topics.decisions,
            _event(decision, scored.task.task_id, "decision", scored.scored_at),
        )

    def _routed(self, scored: TaskScored, routing: Routing) -> Outgoing:
        route = "escalate" if routing.route == "escalate" else "review"
        routed = TaskRouted(
            task=scored.task,
            score=scored.score,
            route=route,
            reasons=list(routing.reasons),
            policy=routing.policy,
            qa_sample=routing.qa_sample,
            required_approvals=routing.required_approvals,
            outcomes=list(routing.outcomes),
            review_priority=routing.review_priority,
            due_at=routing.due_at,
            on_overdue=routing.overdue.action,
            fallback_outcome=routing.overdue.outcome,
            submitted_at=scored.submitted_at,
            routed_at=routing.routed_at,
            blind=routing.blind,
            queue=routing.queue,
            segment=dict(routing.segment),
        )
        return Outgoing(
            self.topics.routed, _event(routed, scored.task.task_id, "routed", routing.routed_at)
        )


def _event(data: EventData, task_id: str, stage: str, time: datetime) -> Event[EventData]:
    return Event.derived(data, source=SOURCE, subject=task_id, stage=stage, time=time)
