"""The control topic: compacted, one key per controlled thing (``model/NAME``, ``policy/active``,
``kill_switch``, ``drift/MODEL/FEATURE``); the latest record of a key is its desired state.
Services read it whole at start, then follow it. Every change names who made it, and the audit
sink keeps them all."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tandem_shared.budget_watch import BudgetWatch, budget_key
from tandem_shared.control_signing import ControlSigner, ControlTrust, signed
from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import ControlChanged, EventData
from tandem_shared.incidents import Incident, incident_key
from tandem_shared.kafka import Outgoing, Publisher
from tandem_shared.reading import read_events
from tandem_shared.risks import RiskRecord, risk_key
from tandem_shared.topics import Topics

READ_TIMEOUT_S = 30.0
CONTROL_TYPES: Mapping[str, type[EventData]] = {"tandem.control.changed.v1": ControlChanged}


def model_key(name: str) -> str:
    return f"model/{name}"


class ModelState(BaseModel):
    """Which version of a model scores (live), which scores beside it (shadow), and the one
    before (the target of a rollback)."""

    model_config = ConfigDict(frozen=True)

    live: str = Field(min_length=1)
    previous: str | None = None
    shadow: str | None = None


def _change(
    kind: Literal[
        "policy", "model", "kill_switch", "model_registry", "risk", "incident", "error_budget"
    ],
    key: str,
    name: str,
    value: BaseModel,
    changed_by: str,
) -> Event[ControlChanged]:
    data = ControlChanged(
        kind=kind,
        name=name,
        value=value.model_dump(mode="json"),
        changed_by=changed_by,
        changed_at=utcnow(),
    )
    # Each change is its own event: ids are unique, the key (subject) is what compaction keeps.
    return Event(str(uuid.uuid4()), "tandem/control", key, data, data.changed_at)


def model_change(name: str, state: ModelState, changed_by: str) -> Event[ControlChanged]:
    return _change("model", model_key(name), name, state, changed_by)


def registry_change(
    name: str, version: str, record: BaseModel, changed_by: str
) -> Event[ControlChanged]:
    """A model version's record: how it was trained (when registered) or the evidence it went
    live on (when promoted). Scoring ignores it; the audit trail keeps every one."""
    return _change("model_registry", f"model-registry/{name}/{version}", name, record, changed_by)


def risk_change(record: RiskRecord, changed_by: str) -> Event[ControlChanged]:
    """A version of a risk of the register (tandem_shared.risks)."""
    return _change("risk", risk_key(record.id), record.id, record, changed_by)


def incident_change(incident: Incident, changed_by: str) -> Event[ControlChanged]:
    """A version of an incident (tandem_shared.incidents)."""
    return _change("incident", incident_key(incident.id), incident.id, incident, changed_by)


def budget_change(watch: BudgetWatch, changed_by: str) -> Event[ControlChanged]:
    """The live watch of a task type's error budget (tandem_shared.budget_watch)."""
    return _change("error_budget", budget_key(watch), watch.task_type, watch, changed_by)


async def publish_change(
    publisher: Publisher,
    topics: Topics,
    event: Event[ControlChanged],
    signer: ControlSigner | None,
) -> None:
    """Publish a change, signed with the process's key (see control_signing)."""
    await publisher.publish([Outgoing(topics.control, signed(event, signer))])


async def read_control(
    bootstrap_servers: str, topics: Topics, trust: ControlTrust
) -> dict[str, ControlChanged]:
    """The latest trusted control record of every key, read to the end of the topic as it is
    now."""
    return dict(await read_control_log(bootstrap_servers, topics, trust))


async def read_control_history(
    bootstrap_servers: str, topics: Topics, key: str, trust: ControlTrust
) -> list[ControlChanged]:
    """Every trusted change of one key the topic still holds, oldest first (compaction keeps at
    least the latest; the audit trail keeps them all)."""
    return [c for k, c in await read_control_log(bootstrap_servers, topics, trust) if k == key]


async def read_control_log(
    bootstrap_servers: str, topics: Topics, trust: ControlTrust
) -> list[tuple[str, ControlChanged]]:
    """Every valid control record a trusted key signed, with its key, in the order of its
    partition; the others are refused (and counted by ``trust``)."""
    records: list[tuple[str, ControlChanged]] = []

    def keep(event: Event[EventData]) -> None:
        data = event.data
        if isinstance(data, ControlChanged) and trust.refusal(event.subject, data) is None:
            records.append((event.subject, data))

    await read_events(
        bootstrap_servers, topics.control, CONTROL_TYPES, keep, timeout_s=READ_TIMEOUT_S
    )
    return records


def model_state(changes: Mapping[str, ControlChanged], name: str) -> ModelState | None:
    """The state the control topic holds for a model, if any."""
    change = changes.get(model_key(name))
    if change is None or change.kind != "model":
        return None
    return ModelState.model_validate(change.value)


def promoted(current: ModelState | None, version: str) -> ModelState:
    """``version`` goes live; the one it replaces becomes the target of a rollback."""
    if current is None:
        return ModelState(live=version)
    previous = current.live if current.live != version else current.previous
    shadow = current.shadow if current.shadow != version else None
    return ModelState(live=version, previous=previous, shadow=shadow)


def rolled_back(current: ModelState | None) -> ModelState:
    """Back to the previous version; rolling back again returns to this one."""
    if current is None or current.previous is None:
        raise ValueError("no previous version is known to roll back to")
    return ModelState(live=current.previous, previous=current.live, shadow=current.shadow)


def shadowed(current: ModelState | None, version: str | None) -> ModelState:
    """``version`` scores beside the live one (None: no shadow); the live version is unchanged."""
    if current is None:
        raise ValueError("no live version is recorded yet: promote one first")
    if version is not None and version == current.live:
        raise ValueError(f"version {version} is already live")
    return current.model_copy(update={"shadow": version})


# ---- routing policy ----------------------------------------------------------------------------

POLICY_KEY = "policy/active"


class PolicyVersion(BaseModel):
    """A policy document as applied: its name and version, and the YAML text itself, so every
    router replica parses exactly what was validated."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int = Field(ge=1)
    document: str


class PolicyState(BaseModel):
    """The active policy and the one before it (the target of a rollback)."""

    model_config = ConfigDict(frozen=True)

    active: PolicyVersion
    previous: PolicyVersion | None = None
    action: Literal["apply", "rollback"] = "apply"


def policy_change(state: PolicyState, changed_by: str) -> Event[ControlChanged]:
    return _change("policy", POLICY_KEY, state.active.name, state, changed_by)


def policy_state(changes: Mapping[str, ControlChanged]) -> PolicyState | None:
    change = changes.get(POLICY_KEY)
    if change is None or change.kind != "policy":
        return None
    return PolicyState.model_validate(change.value)


def applied(current: PolicyState | None, proposed: PolicyVersion) -> PolicyState:
    """``proposed`` becomes active. Versions only go up, so a version names one document."""
    if current is not None and proposed.version <= current.active.version:
        raise ValueError(
            f"version {proposed.version} is not above the active version "
            f"{current.active.version}: give the changed document a new version"
        )
    return PolicyState(active=proposed, previous=current.active if current else None)


def policy_rolled_back(current: PolicyState | None) -> PolicyState:
    """Back to the previous policy; rolling back again returns to this one."""
    if current is None or current.previous is None:
        raise ValueError("no previous policy is known to roll back to")
    return PolicyState(active=current.previous, previous=current.active, action="rollback")


# ---- kill switch -------------------------------------------------------------------------------

KILL_SWITCH_KEY = "kill_switch"


class KillSwitch(BaseModel):
    """Automation off everywhere (``all``) or for some task types: those tasks go to people."""

    model_config = ConfigDict(frozen=True)

    all: bool = False
    task_types: frozenset[str] = frozenset()

    def covers(self, task_type: str) -> bool:
        return self.all or task_type in self.task_types

    @property
    def engaged(self) -> bool:
        return self.all or bool(self.task_types)


def kill_switch_change(state: KillSwitch, changed_by: str) -> Event[ControlChanged]:
    return _change("kill_switch", KILL_SWITCH_KEY, KILL_SWITCH_KEY, state, changed_by)


def kill_switch_state(changes: Mapping[str, ControlChanged]) -> KillSwitch:
    change = changes.get(KILL_SWITCH_KEY)
    if change is None or change.kind != "kill_switch":
        return KillSwitch()
    return KillSwitch.model_validate(change.value)


def switched(current: KillSwitch, on: bool, task_type: str | None = None) -> KillSwitch:
    """The switch turned on or off, for everything (``task_type`` None) or one task type.
    Turning everything off clears the task types too: off means automation is back."""
    if task_type is None:
        return KillSwitch(all=on, task_types=current.task_types if on else frozenset())
    types = current.task_types | {task_type} if on else current.task_types - {task_type}
    return KillSwitch(all=current.all, task_types=frozenset(types))
