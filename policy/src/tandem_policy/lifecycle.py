"""The policy lifecycle against a running pipeline: validate, simulate, apply, roll back, the
history and the kill switch. Used by ``tandem policy`` and the review API's admin endpoints;
every change is a record on tandem.control naming who made it (the audit sink keeps them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from tandem_shared.control import (
    POLICY_KEY,
    KillSwitch,
    PolicyState,
    PolicyVersion,
    applied,
    kill_switch_change,
    kill_switch_state,
    policy_change,
    policy_rolled_back,
    policy_state,
    publish_change,
    read_control,
    read_control_history,
    switched,
)
from tandem_shared.control_signing import ControlKeys
from tandem_shared.events import ControlChanged
from tandem_shared.kafka import Publisher
from tandem_shared.topics import Topics

from tandem_policy.budget_cost import CasesFor
from tandem_policy.loader import parse_policy
from tandem_policy.policy import Policy
from tandem_policy.replay import human_outcomes, scored_between
from tandem_policy.whatif import WhatIf, compare


class PolicyChange(BaseModel):
    """One entry of the policy history."""

    name: str
    version: int
    action: str
    changed_by: str
    changed_at: datetime


def proposed(document: str, source: str = "<proposed policy>") -> tuple[Policy, PolicyVersion]:
    """The policy a document describes, or PolicyError naming each problem and its line."""
    policy = parse_policy(document, source=source)
    return policy, PolicyVersion(name=policy.name, version=policy.version, document=document)


def active_policy(changes: Mapping[str, ControlChanged]) -> Policy | None:
    """The policy the control topic holds active, parsed (None before any was applied)."""
    state = policy_state(changes)
    return parse_policy(state.active.document, source="active policy") if state else None


@dataclass
class Governance:
    bootstrap_servers: str
    topics: Topics
    publisher: Publisher
    keys: ControlKeys

    async def state(self) -> tuple[PolicyState | None, KillSwitch]:
        changes = await read_control(self.bootstrap_servers, self.topics, self.keys.trust)
        return policy_state(changes), kill_switch_state(changes)

    async def active(self) -> Policy | None:
        return active_policy(
            await read_control(self.bootstrap_servers, self.topics, self.keys.trust)
        )

    async def apply(self, document: str, who: str) -> PolicyState:
        """Publish a valid document as the active policy. PolicyError if it is invalid,
        ValueError if its version is not above the active one."""
        _, version = proposed(document)
        current, _ = await self.state()
        return await self._publish(applied(current, version), who)

    async def rollback(self, who: str) -> PolicyState:
        current, _ = await self.state()
        return await self._publish(policy_rolled_back(current), who)

    async def history(self) -> list[PolicyChange]:
        changes = await read_control_history(
            self.bootstrap_servers, self.topics, POLICY_KEY, self.keys.trust
        )
        out = []
        for change in changes:
            state = PolicyState.model_validate(change.value)
            out.append(
                PolicyChange(
                    name=state.active.name,
                    version=state.active.version,
                    action=state.action,
                    changed_by=change.changed_by,
                    changed_at=change.changed_at,
                )
            )
        return out

    async def kill_switch(self, on: bool, task_type: str | None, who: str) -> KillSwitch:
        _, current = await self.state()
        state = switched(current, on, task_type)
        await publish_change(
            self.publisher, self.topics, kill_switch_change(state, who), self.keys.signer
        )
        return state

    async def simulate(
        self,
        document: str,
        since: datetime,
        until: datetime,
        reviews_per_hour: float,
        against: Policy | None = None,
        cases_for: CasesFor | None = None,
    ) -> WhatIf:
        """The window's scored events under the document and under ``against`` (default: the
        active policy), with the budget curves ``cases_for`` gives cases for. ValueError when
        there is nothing to compare against."""
        policy, _ = proposed(document)
        base = against or await self.active()
        if base is None:
            raise ValueError("no policy is active yet: give one to compare against")
        scored = await scored_between(self.bootstrap_servers, self.topics, since, until)
        labels = await human_outcomes(self.bootstrap_servers, self.topics, since)
        return compare(base, policy, scored, labels, reviews_per_hour, cases_for=cases_for)

    async def _publish(self, state: PolicyState, who: str) -> PolicyState:
        await publish_change(
            self.publisher, self.topics, policy_change(state, who), self.keys.signer
        )
        return state
