"""The periodic oversight report's figures: what the review API reports of a period (by day, by
segment, as a whole), the risk register and incidents, and from the audit API the control
changes of the period (policies, models, the kill switch, drift votes) with their authors and
the ledger's latest signed checkpoint. Every figure is kept as data beside the page, so a reader
(or a test) can trace it back to the events."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel
from tandem_shared.drift_votes import DriftVote
from tandem_shared.events import ControlChanged

from tandem_cli.period import Period

CONTROL_TYPE = "tandem.control.changed.v1"
CHANGE_KINDS = ("policy", "model", "kill_switch", "model_registry")


class Change(BaseModel):
    """A control change of the period: what changed, and who changed it."""

    at: datetime
    kind: str
    name: str
    what: str
    changed_by: str
    seq: int  # its entry in the ledger


class Drift(BaseModel):
    """What the scoring replicas said of one feature of one model version in the period."""

    model: str
    version: str
    feature: str
    votes: int
    alarms: int  # votes that said it drifts
    max_psi: float | None
    daily_max_psi: dict[str, float]  # by UTC day


class Figures(BaseModel):
    """Every number the report shows, as the sources gave it or as computed here."""

    period: str
    since: datetime
    until: datetime
    generated_at: datetime
    overall: dict[str, Any]  # /v1/stats's overall group
    days: list[dict[str, Any]]  # its groups by day
    segments: list[dict[str, Any]]  # its groups by segment, each with its disparity
    reviewer_feedback: list[dict[str, Any]]
    automation_bias: list[dict[str, Any]]
    risks: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    changes: list[Change]
    drift: list[Drift]
    checkpoint: dict[str, Any] | None  # the ledger's latest signed checkpoint


Get = Callable[[str, str, dict[str, str]], httpx.Response]


def gather(period: Period, review: Get, audit: Get, now: datetime) -> Figures:
    """``review`` and ``audit`` answer GET requests (path, what it is, parameters)."""
    window = {"since": period.since.isoformat(), "until": period.until.isoformat()}
    by_day = review("/v1/stats", "the outcomes by day", {**window, "group_by": "day"}).json()
    by_segment = review(
        "/v1/stats", "the outcomes by segment", {**window, "group_by": "segment"}
    ).json()
    entries = audit(
        "/v1/audit/export", "the control changes", {**window, "type": CONTROL_TYPE}
    ).text
    controlled = list(_control_changes(entries.splitlines()))
    checkpoint = audit("/v1/audit/checkpoints/latest", "the latest checkpoint", {})
    return Figures(
        period=period.label,
        since=period.since,
        until=period.until,
        generated_at=now,
        overall=by_day["overall"],
        days=by_day["groups"],
        segments=by_segment["groups"],
        reviewer_feedback=by_day["reviewer_feedback"],
        automation_bias=by_day["automation_bias"],
        risks=review("/v1/risks", "the risk register", {}).json(),
        incidents=[
            i for i in review("/v1/incidents", "the incidents", {}).json() if _touches(i, period)
        ],
        changes=[_change(seq, c) for seq, c in controlled if c.kind in CHANGE_KINDS],
        drift=drift_of(c for _, c in controlled),
        checkpoint=checkpoint.json() if checkpoint.status_code == 200 else None,
    )


def _control_changes(lines: Iterable[str]) -> Iterable[tuple[int, ControlChanged]]:
    for line in lines:
        entry = json.loads(line)
        yield int(entry["seq"]), ControlChanged.model_validate(entry["data"])


def _touches(incident: dict[str, Any], period: Period) -> bool:
    """Open at some time in the period: opened before its end, not closed before its start."""
    times = [datetime.fromisoformat(step["at"]) for step in incident["timeline"]]
    if not times or min(times) >= period.until:
        return False
    return incident["status"] == "open" or max(times) >= period.since


def _change(seq: int, change: ControlChanged) -> Change:
    return Change(
        at=change.changed_at,
        kind=change.kind,
        name=change.name,
        what=describe(change),
        changed_by=change.changed_by,
        seq=seq,
    )


def describe(change: ControlChanged) -> str:
    """A control change in a few words."""
    value = change.value
    if change.kind == "policy":
        active = value.get("active", {})
        return f"{value.get('action', 'apply')} {active.get('name')} v{active.get('version')}"
    if change.kind == "model":
        shadow = f", shadow {value['shadow']}" if value.get("shadow") else ""
        return f"live {value.get('live')}{shadow}"
    if change.kind == "kill_switch":
        if value.get("all"):
            return "on for every task type"
        types = value.get("task_types") or []
        return f"on for {', '.join(sorted(types))}" if types else "off"
    return f"{value.get('action', 'recorded')} version {value.get('version')}"


def drift_of(changes: Iterable[ControlChanged]) -> list[Drift]:
    """Each feature's votes of the period: how many, how many alarmed, the largest PSI, and
    the largest PSI of each day."""
    votes: dict[tuple[str, str, str], list[DriftVote]] = defaultdict(list)
    for change in changes:
        vote = DriftVote.of(change)
        if vote is not None:
            votes[(vote.model, vote.version, vote.feature)].append(vote)
    found = []
    for (model, version, feature), said in sorted(votes.items()):
        daily: dict[str, float] = {}
        for vote in said:
            if vote.psi is not None:
                day = vote.at.date().isoformat()
                daily[day] = max(daily.get(day, vote.psi), vote.psi)
        measured = [v.psi for v in said if v.psi is not None]
        found.append(
            Drift(
                model=model,
                version=version,
                feature=feature,
                votes=len(said),
                alarms=sum(v.drifting for v in said),
                max_psi=max(measured) if measured else None,
                daily_max_psi=dict(sorted(daily.items())),
            )
        )
    return found
