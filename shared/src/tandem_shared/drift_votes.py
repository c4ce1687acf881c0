"""Drift alarms as votes, so that they survive restarts and replicas.

Each scoring replica watches the tasks it scores and says, for each model version and feature,
whether its own window drifts: a control record keyed ``drift/MODEL/VERSION/FEATURE/REPLICA``
(its vote). The alarm of a model version's feature holds while any replica's vote says it
drifts, so one replica's recovery never clears another's alarm. A replica repeats its alarms
(``refresh``) while they last, and a vote not repeated for ``ttl`` no longer counts: a replica
that is gone for good (scaled down, rescheduled under another name) cannot hold an alarm
forever, while the replicas that remain vote on the same stream. A replica restarted under its
name (``TANDEM_INSTANCE_ID``) takes its votes back from the topic, and keeps an alarm until its
window says it is over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tandem_shared.events import ControlChanged

DRIFT = "drift"


def vote_key(model: str, version: str, feature: str, replica: str) -> str:
    return f"{DRIFT}/{model}/{version}/{feature}/{replica}"


@dataclass(frozen=True)
class DriftVote:
    """One replica's word on one feature of one model version."""

    model: str
    version: str
    feature: str
    replica: str  # "" for a record written before replicas voted apart
    drifting: bool
    psi: float | None
    at: datetime

    @classmethod
    def of(cls, change: ControlChanged) -> DriftVote | None:
        """The vote a drift record holds; None when it names no feature and version."""
        value = change.value
        feature, version = value.get("feature"), value.get("version")
        if change.kind != DRIFT or not isinstance(feature, str) or not isinstance(version, str):
            return None
        replica, psi = value.get("replica", ""), value.get("psi")
        return cls(
            model=change.name,
            version=version,
            feature=feature,
            replica=replica if isinstance(replica, str) else "",
            drifting=value.get("drifting") is True,
            psi=float(psi) if isinstance(psi, int | float) else None,
            at=change.changed_at,
        )


class DriftAlarms:
    """The votes read so far, and the features in alarm: those with a vote that says so and
    was cast within ``ttl_s`` of ``now``. Asked once per batch, so the answer is kept and
    worked out again only when a vote comes or the earliest one runs out."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        # (model, version) -> feature -> replica -> when its alarm vote runs out (epoch s)
        self._votes: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
        self._alarmed: frozenset[tuple[str, str]] = frozenset()
        self._next_expiry = float("inf")

    def follow(self, vote: DriftVote) -> None:
        features = self._votes.setdefault((vote.model, vote.version), {})
        replicas = features.setdefault(vote.feature, {})
        if vote.drifting:
            replicas[vote.replica] = vote.at.timestamp() + self.ttl_s
        else:
            replicas.pop(vote.replica, None)
        self._next_expiry = -1.0  # work it out on the next question

    def alarmed(self, now: float) -> frozenset[tuple[str, str]]:
        """The (model, version) pairs with a feature in alarm."""
        if now >= self._next_expiry:
            self._settle(now)
        return self._alarmed

    def features(self, now: float) -> dict[str, list[str]]:
        """``MODEL/VERSION`` → the features in alarm, for the model versions with any."""
        self._settle(now)
        return {
            f"{model}/{version}": sorted(f for f, r in features.items() if r)
            for (model, version), features in self._votes.items()
            if (model, version) in self._alarmed
        }

    def _settle(self, now: float) -> None:
        """Drop the votes that ran out; recompute the alarms and the next expiry."""
        alarmed: set[tuple[str, str]] = set()
        earliest = float("inf")
        for key, features in self._votes.items():
            for replicas in features.values():
                for replica, until in list(replicas.items()):
                    if until <= now:
                        del replicas[replica]
                    else:
                        earliest = min(earliest, until)
                if replicas:
                    alarmed.add(key)
        self._alarmed = frozenset(alarmed)
        self._next_expiry = earliest
