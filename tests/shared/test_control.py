"""Model states on the control topic: promote and roll back, as pure functions."""

from __future__ import annotations

import pytest
from tandem_shared.control import ModelState, promoted, rolled_back, shadowed


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
