"""The router's own Prometheus metrics, registered on the service's registry."""

from __future__ import annotations

from collections import Counter as TallyCounter
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from tandem_policy.policy import Policy, Routing
from tandem_shared.control import KillSwitch
from tandem_shared.telemetry import children


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "tandem_decisions",
            "Tasks routed, by route and the model's outcome (the decision when route is auto).",
            ["task_type", "route", "outcome"],
            registry=registry,
        )
        self.routes = Counter(
            "tandem_routes",
            "Routing reasons; a task routed for several reasons counts once per reason.",
            ["task_type", "route", "reason"],
            registry=registry,
        )
        self.qa_samples = Counter(
            "tandem_router_qa_samples",
            "Automatic decisions also sent to review as a QA sample.",
            ["task_type"],
            registry=registry,
        )
        self.duplicates = Counter(
            "tandem_router_duplicates",
            "Scored events dropped because their task was already routed.",
            ["task_type"],
            registry=registry,
        )
        self.policy_version = Gauge(
            "tandem_router_policy_version",
            "Version of the active routing policy.",
            ["policy"],
            registry=registry,
        )

        self.kill_switch = Gauge(
            "tandem_router_kill_switch",
            "1 while automation is switched off and tasks go to people; task_type '*' is all.",
            ["task_type"],
            registry=registry,
        )
        self.policy_refused = Counter(
            "tandem_router_policy_refused",
            "Policy changes on the control topic refused (the last policy stays active).",
            registry=registry,
        )

        self._decisions = children(self.decisions)
        self._routes = children(self.routes)
        self._qa_samples = children(self.qa_samples)

    def active_policy(self, policy: Policy, kill_switch: KillSwitch) -> None:
        self.policy_version.clear()
        self.policy_version.labels(policy.name).set(policy.version)
        self.kill_switch.clear()
        self.kill_switch.labels("*").set(1 if kill_switch.all else 0)
        for task_type in kill_switch.task_types:
            self.kill_switch.labels(task_type).set(1)

    def routed(self, routings: Iterable[tuple[str, Routing]]) -> None:
        """Counts a batch's routings (task type, routing): each series is incremented once a
        batch, not once a task, as a Prometheus increment takes a lock."""
        decisions: TallyCounter[tuple[str, str, str]] = TallyCounter()
        routes: TallyCounter[tuple[str, str, str]] = TallyCounter()
        sampled: TallyCounter[str] = TallyCounter()
        for task_type, routing in routings:
            decisions[task_type, routing.route, routing.outcome] += 1
            for reason in routing.reasons:
                routes[task_type, routing.route, reason] += 1
            if routing.qa_sample:
                sampled[task_type] += 1
        for labels, count in decisions.items():
            self._decisions(*labels).inc(count)
        for labels, count in routes.items():
            self._routes(*labels).inc(count)
        for task_type, count in sampled.items():
            self._qa_samples(task_type).inc(count)
