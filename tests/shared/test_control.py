"""States on the control topic (models, the policy, the kill switch), as pure functions."""

from __future__ import annotations

import pytest
from tandem_shared.control import (
    KILL_SWITCH_KEY,
    POLICY_KEY,
    KillSwitch,
    ModelState,
    PolicyVersion,
    applied,
    kill_switch_change,
    kill_switch_state,
    policy_change,
    policy_rolled_back,
    policy_state,
    promoted,
    rolled_back,
    shadowed,
    switched,
)


def test_promote_keeps_the_replaced_version_for_a_rollback() -> None:
    first = promoted(None, "1")
    assert first == ModelState(live="1")
    second = promoted(first, "2")
    assert second == ModelState(live="2", previous="1")
    assert promoted(second, "2") == second  # promoting what is live changes nothing


def test_rollback_returns_to_the_previous_and_back_again() -> None:
    state = ModelState(live="2", previous="1", shadow="3")
    back = rolled_back(state)
    assert back == ModelState(live="1", previous="2", shadow="3")
    assert rolled_back(back) == state


def test_promoting_the_shadow_ends_its_shadowing() -> None:
    assert promoted(ModelState(live="1", shadow="2"), "2") == ModelState(live="2", previous="1")


@pytest.mark.parametrize("state", [None, ModelState(live="1")])
def test_rollback_needs_a_previous_version(state: ModelState | None) -> None:
    with pytest.raises(ValueError, match="no previous version"):
        rolled_back(state)


def test_shadow_is_set_and_cleared_beside_the_live_version() -> None:
    state = ModelState(live="1", previous="0")
    assert shadowed(state, "2") == ModelState(live="1", previous="0", shadow="2")
    assert shadowed(shadowed(state, "2"), None) == state
    with pytest.raises(ValueError, match="already live"):
        shadowed(state, "1")
    with pytest.raises(ValueError, match="promote one first"):
        shadowed(None, "2")


def policy_version(n: int) -> PolicyVersion:
    return PolicyVersion(name="p", version=n, document=f"name: p\nversion: {n}\n")


def test_applying_keeps_the_replaced_policy_and_versions_only_go_up() -> None:
    first = applied(None, policy_version(1))
    second = applied(first, policy_version(2))
    assert (second.active.version, second.previous) == (2, first.active)
    with pytest.raises(ValueError, match="not above the active version 2"):
        applied(second, policy_version(2))


def test_a_policy_rollback_returns_to_the_previous_and_back_again() -> None:
    state = applied(applied(None, policy_version(1)), policy_version(2))
    back = policy_rolled_back(state)
    assert (back.active.version, back.previous, back.action) == (1, state.active, "rollback")
    assert policy_rolled_back(back).active.version == 2
    with pytest.raises(ValueError, match="no previous policy"):
        policy_rolled_back(applied(None, policy_version(1)))


def test_the_kill_switch_turns_on_and_off_per_task_type_and_everywhere() -> None:
    one = switched(KillSwitch(), True, "a")
    assert one.covers("a") and not one.covers("b") and one.engaged
    everywhere = switched(one, True)
    assert everywhere.covers("b")
    assert switched(everywhere, False, "a") == KillSwitch(all=True)
    assert switched(everywhere, False) == KillSwitch()


def test_control_states_survive_the_event_they_travel_in() -> None:
    state = applied(None, policy_version(1))
    assert policy_state({POLICY_KEY: policy_change(state, "ana").data}) == state
    switch = KillSwitch(task_types=frozenset({"a"}))
    assert kill_switch_state({KILL_SWITCH_KEY: kill_switch_change(switch, "ana").data}) == switch
    assert kill_switch_state({}) == KillSwitch()
