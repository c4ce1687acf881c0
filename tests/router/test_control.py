"""The router's view of the control topic, without a broker: what each change does to routing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from tandem_policy.loader import dump_policy
from tandem_router.control import RoutingControl
from tandem_router.telemetry import RouterMetrics
from tandem_shared.budget_watch import BudgetWatch
from tandem_shared.control import (
    KILL_SWITCH_KEY,
    POLICY_KEY,
    KillSwitch,
    PolicyState,
    PolicyVersion,
    budget_change,
    kill_switch_change,
    policy_change,
)
from tandem_shared.events import ControlChanged, ModelRef, PolicyRef

from tests.policy.factories import policy

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def make(kill_switch: bool = False) -> tuple[RoutingControl, CollectorRegistry, Clock]:
    registry, clock = CollectorRegistry(), Clock()
    control = RoutingControl(
        policy(), RouterMetrics(registry), kill_switch=kill_switch, clock=clock
    )
    return control, registry, clock


def at(change: ControlChanged, seconds: int) -> ControlChanged:
    return change.model_copy(update={"changed_at": T0 + timedelta(seconds=seconds)})


def version(n: int, document: str | None = None) -> PolicyVersion:
    text = (
        document
        if document is not None
        else dump_policy(policy()).replace("version: 3", f"version: {n}")
    )
    return PolicyVersion(name="test", version=n, document=text)


def applied(n: int, seconds: int, document: str | None = None) -> ControlChanged:
    return at(policy_change(PolicyState(active=version(n, document)), "ana").data, seconds)


def test_a_published_policy_becomes_active_and_its_version_is_exported() -> None:
    control, registry, _ = make()
    control.follow(POLICY_KEY, applied(4, 1))
    assert control.policy.version == 4
    assert registry.get_sample_value("tandem_router_policy_version", {"policy": "test"}) == 4


def test_an_invalid_document_is_refused_whole_and_the_last_policy_stays() -> None:
    control, registry, _ = make()
    control.follow(POLICY_KEY, applied(4, 1))
    broken = dump_policy(policy()).replace("version: 3", "version: 5").replace("0.97", "1.7")
    control.follow(POLICY_KEY, applied(5, 2, broken))
    assert control.policy.version == 4
    assert registry.get_sample_value("tandem_router_policy_refused_total") == 1


def test_a_replayed_older_change_does_not_undo_a_newer_one() -> None:
    control, _, _ = make()
    newer, older = applied(5, 10), applied(4, 5)
    control.follow(POLICY_KEY, newer)
    control.follow(POLICY_KEY, older)
    assert control.policy.version == 5


def test_the_kill_switch_per_task_type_and_everywhere() -> None:
    control, registry, _ = make()
    one = at(
        kill_switch_change(KillSwitch(task_types=frozenset({"tumor_screening"})), "ana").data, 1
    )
    control.follow(KILL_SWITCH_KEY, one)
    assert control.killed("tumor_screening") and not control.killed("wine_cultivar")
    value = registry.get_sample_value("tandem_router_kill_switch", {"task_type": "tumor_screening"})
    assert value == 1
    control.follow(KILL_SWITCH_KEY, at(kill_switch_change(KillSwitch(all=True), "ana").data, 2))
    assert control.killed("wine_cultivar")
    control.follow(KILL_SWITCH_KEY, at(kill_switch_change(KillSwitch(), "ben").data, 3))
    assert not control.killed("tumor_screening")
    assert registry.get_sample_value("tandem_router_kill_switch", {"task_type": "*"}) == 0


def test_a_kill_switch_set_by_configuration_cannot_be_lifted_by_an_event() -> None:
    control, _, _ = make(kill_switch=True)
    control.follow(KILL_SWITCH_KEY, at(kill_switch_change(KillSwitch(), "ana").data, 1))
    assert control.killed("tumor_screening")


def drift(
    drifting: bool, seconds: int, feature: str = "mean_radius", replica: str = "scoring-a"
) -> ControlChanged:
    value = {"feature": feature, "psi": 0.3, "drifting": drifting, "version": "1"}
    return ControlChanged(
        kind="drift",
        name="tumor_screening",
        value={**value, "replica": replica},
        changed_by="tandem/scoring",
        changed_at=T0 + timedelta(seconds=seconds),
    )


def vote(control: RoutingControl, change: ControlChanged) -> None:
    """Follow a vote under its key, as the control topic has it."""
    replica, feature = change.value["replica"], change.value["feature"]
    control.follow(f"drift/tumor_screening/1/{feature}/{replica}", change)


LIVE = ModelRef(name="tumor_screening", version="1")


def test_drift_alarms_concern_the_model_version_that_drifts() -> None:
    control, _, clock = make()
    clock.now = T0.timestamp()
    vote(control, drift(True, 1))
    vote(control, drift(True, 1, "worst_area"))
    assert control.drifting(LIVE)
    assert not control.drifting(ModelRef(name="tumor_screening", version="2"))
    vote(control, drift(False, 2))
    assert control.drifting(LIVE)  # worst_area is still in alarm
    assert control.drifting_features() == {"tumor_screening/1": ["worst_area"]}
    vote(control, drift(False, 2, "worst_area"))
    assert not control.drifting(LIVE)
    assert control.drifting_features() == {}


def test_one_replica_s_recovery_never_clears_another_s_alarm() -> None:
    control, _, clock = make()
    clock.now = T0.timestamp()
    vote(control, drift(True, 1, replica="scoring-a"))
    vote(control, drift(True, 2, replica="scoring-b"))
    vote(control, drift(False, 3, replica="scoring-a"))  # a's window recovered; b's did not
    assert control.drifting(LIVE)
    vote(control, drift(False, 4, replica="scoring-b"))
    assert not control.drifting(LIVE)


def test_an_alarm_counts_while_its_replica_repeats_it() -> None:
    control, _, clock = make()  # votes count 600 s after they were cast
    clock.now = T0.timestamp()
    vote(control, drift(True, 0))
    clock.now += 599
    assert control.drifting(LIVE)
    vote(control, drift(True, 590))  # repeated: good until 1,190 s
    clock.now += 2
    assert control.drifting(LIVE)
    clock.now = T0.timestamp() + 1_190  # a replica gone for good holds no alarm
    assert not control.drifting(LIVE)
    # An old vote read at start (the topic keeps the latest of each key) counts for nothing.
    vote(control, drift(True, 2, replica="scoring-gone"))
    assert not control.drifting(LIVE)
    # A record written before replicas voted apart names none: it is one more voter.
    legacy = drift(True, 1_200).model_copy(
        update={"value": {"feature": "mean_radius", "psi": 0.3, "drifting": True, "version": "1"}}
    )
    control.follow("drift/tumor_screening/mean_radius", legacy)
    assert control.drifting(LIVE)


def test_unreadable_until_read_and_again_when_the_broker_goes_quiet() -> None:
    control, _, clock = make()
    assert control.unreadable
    control.read()
    assert not control.unreadable
    clock.now += 11
    assert control.unreadable
    control.last_fetch = lambda: clock.now - 1  # the control consumer hears from the broker
    assert not control.unreadable


def test_a_breached_error_budget_holds_under_the_policy_it_judged_only() -> None:
    control, _, _ = make()
    active = control.policy

    def watch(
        breached: bool, version: int, seconds: int, segment: str | None = None
    ) -> ControlChanged:
        judged = BudgetWatch(
            task_type="tumor_screening",
            segment=segment,
            policy=PolicyRef(name=active.name, version=version),
            max_error=0.01,
            confidence=0.95,
            qa_samples=700,
            errors=12 if breached else 1,
            upper_bound=0.027 if breached else 0.007,
            breached=breached,
            at=T0,
        )
        return at(budget_change(judged, "tandem/review-api").data, seconds)

    whole = ("tumor_screening", None)
    assert not control.budget_breached(whole)
    control.follow("error-budget/tumor_screening", watch(True, active.version, 1))
    assert control.budget_breached(whole)
    assert not control.budget_breached(("other_type", None))
    # Kept again: automation comes back.
    control.follow("error-budget/tumor_screening", watch(False, active.version, 2))
    assert not control.budget_breached(whole)
    # A breach judged under another version says nothing of the policy active now.
    control.follow("error-budget/tumor_screening", watch(True, active.version - 1, 3))
    assert not control.budget_breached(whole)
    # Kept per segment: one clinic's breach is that clinic's alone.
    south = ("tumor_screening", "clinic=south")
    control.follow(
        "error-budget/tumor_screening/clinic=south", watch(True, active.version, 4, "clinic=south")
    )
    assert control.breached_budgets() == {south}
    control.follow(
        "error-budget/tumor_screening/clinic=north", watch(False, active.version, 5, "clinic=north")
    )
    assert control.breached_budgets() == {south}
