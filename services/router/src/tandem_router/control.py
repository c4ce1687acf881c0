"""What the control topic tells the router: the active policy, the kill switch, drift alarms,
and the live watch of each task type's error budget.

Every replica follows the topic with a consumer group of its own, so a change reaches all of
them within a poll. A policy that does not parse is refused and the last one stays: a document
is applied whole or not at all. When the topic cannot be read, the router cannot know whether
automation was switched off, so it sends tasks to people (reason ``control_unreadable``) until
it can read again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from pydantic import ValidationError
from tandem_policy.loader import PolicyError, parse_policy
from tandem_policy.policy import BudgetScope, Policy
from tandem_shared.budget_watch import BudgetWatch
from tandem_shared.control import KillSwitch, PolicyState
from tandem_shared.drift_votes import DriftAlarms, DriftVote
from tandem_shared.envelope import Event
from tandem_shared.events import ControlChanged, EventData, ModelRef
from tandem_shared.kafka import Incoming, Result

from tandem_router.telemetry import RouterMetrics

log = logging.getLogger(__name__)

Clock = Callable[[], float]
LastRead = Callable[[], float | None]


class RoutingControl:
    """The router's view of the control topic, updated by ``follow`` one change at a time."""

    def __init__(
        self,
        policy: Policy,
        metrics: RouterMetrics,
        *,
        kill_switch: bool = False,
        stale_after_s: float = 10.0,
        drift_vote_ttl_s: float = 600.0,
        last_fetch: LastRead = lambda: None,
        clock: Clock = time.time,
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        # The setting is a floor: a switch engaged by configuration cannot be lifted by an event.
        self._configured = KillSwitch(all=kill_switch)
        self.kill_switch = self._configured
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.last_fetch = last_fetch  # when the control consumer last heard from the broker
        # Each scoring replica's votes (tandem_shared.drift_votes): an alarm holds while one
        # repeated within the ttl says so.
        self.drift = DriftAlarms(drift_vote_ttl_s)
        # By what each watches (BudgetWatch.scope): the review API's latest word.
        self.budgets: dict[BudgetScope, BudgetWatch] = {}
        self._applied_at: dict[str, datetime] = {}
        self._read_at: float | None = None
        metrics.active_policy(policy, self.kill_switch)

    # ---- what routing asks -----------------------------------------------------------------

    def killed(self, task_type: str) -> bool:
        return self.kill_switch.covers(task_type)

    def breached_budgets(self) -> frozenset[BudgetScope]:
        """The error budgets (of task types, or of segments where kept per segment) the live
        watch says no longer show, under the policy version now active (a new version,
        calibrated again, starts with a clean slate): asked once a batch."""
        active = (self.policy.name, self.policy.version)
        return frozenset(
            scope
            for scope, watch in self.budgets.items()
            if watch.breached and (watch.policy.name, watch.policy.version) == active
        )

    def budget_breached(self, scope: BudgetScope) -> bool:
        return scope in self.breached_budgets()

    def drifting_models(self) -> frozenset[tuple[str, str]]:
        """The (model, version) pairs with a feature in drift alarm now: asked once a batch."""
        return self.drift.alarmed(self.clock())

    def drifting(self, model: ModelRef) -> bool:
        return (model.name, model.version) in self.drifting_models()

    def drifting_features(self) -> dict[str, list[str]]:
        """``MODEL/VERSION`` → the features in alarm, for the models with any."""
        return self.drift.features(self.clock())

    @property
    def unreadable(self) -> bool:
        """True until the topic was read once, and when the broker has not answered the
        control consumer for ``stale_after_s``."""
        heard = [t for t in (self._read_at, self.last_fetch()) if t is not None]
        return not heard or self.clock() - max(heard) > self.stale_after_s

    def read(self) -> None:
        """The topic was read to its end at start."""
        self._read_at = self.clock()

    # ---- following the topic ---------------------------------------------------------------

    def follow(self, key: str, change: ControlChanged) -> None:
        # Changes of one key arrive in order; one older than what is applied is a replay.
        if key in self._applied_at and change.changed_at <= self._applied_at[key]:
            return
        if change.kind == "policy":
            applied = self._follow_policy(change)
        elif change.kind == "kill_switch":
            applied = self._follow_kill_switch(change)
        elif change.kind == "drift":
            applied = self._follow_drift(change)
        elif change.kind == "error_budget":
            applied = self._follow_budget(change)
        else:
            return
        if applied:
            self._applied_at[key] = change.changed_at
            self.metrics.active_policy(self.policy, self.kill_switch)

    def _follow_policy(self, change: ControlChanged) -> bool:
        try:
            state = PolicyState.model_validate(change.value)
            policy = parse_policy(state.active.document, source=f"control ({change.changed_by})")
        except (ValidationError, PolicyError) as exc:
            log.error(
                "policy change by %s refused, keeping %s: %s",
                change.changed_by,
                _ref(self.policy),
                exc,
            )
            self.metrics.policy_refused.inc()
            return False
        self.policy = policy  # one assignment: a task is routed wholly under one version
        log.info("policy %s now active (%s by %s)", _ref(policy), state.action, change.changed_by)
        return True

    def _follow_kill_switch(self, change: ControlChanged) -> bool:
        try:
            state = KillSwitch.model_validate(change.value)
        except ValidationError as exc:
            log.error(
                "kill switch change by %s is not a kill switch state: %s", change.changed_by, exc
            )
            return False
        self.kill_switch = KillSwitch(
            all=state.all or self._configured.all, task_types=state.task_types
        )
        log.warning("kill switch by %s: %s", change.changed_by, _describe(self.kill_switch))
        return True

    def _follow_drift(self, change: ControlChanged) -> bool:
        vote = DriftVote.of(change)
        if vote is None:
            log.error(
                "drift change for %s names no feature and version: %s", change.name, change.value
            )
            return False
        self.drift.follow(vote)
        return True

    def _follow_budget(self, change: ControlChanged) -> bool:
        try:
            watch = BudgetWatch.model_validate(change.value)
        except ValidationError as exc:
            log.error("error budget change by %s is not a watch: %s", change.changed_by, exc)
            return False
        was = self.budget_breached(watch.scope)
        self.budgets[watch.scope] = watch
        if self.budget_breached(watch.scope) != was:
            log.warning(
                "error budget of %s %s: upper bound %.4f against %.4f on %d QA samples",
                "/".join(s for s in watch.scope if s),
                "breached" if watch.breached else "kept again",
                watch.upper_bound,
                watch.max_error,
                watch.qa_samples,
            )
        return True


class ControlFollower:
    """The batch handler of the control consumer: follows every change, publishes nothing."""

    def __init__(self, control: RoutingControl) -> None:
        self.control = control

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        for item in batch:
            if isinstance(item.item.data, ControlChanged):
                self.control.follow(item.item.subject, item.item.data)
        return [[] for _ in batch]


def _ref(policy: Policy) -> str:
    return f"{policy.name} v{policy.version}"


def _describe(state: KillSwitch) -> str:
    if state.all:
        return "automation off for every task type"
    if state.task_types:
        return f"automation off for {', '.join(sorted(state.task_types))}"
    return "automation on"
