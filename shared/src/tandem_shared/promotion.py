"""Promoting a model on evidence: what a validation found, and the gate that reads it.

``tandem model validate`` compares a candidate with the live version on labels people gave to
tasks the candidate never trained on, and writes this evidence. The gate refuses a candidate
that is less accurate overall, or whose error on a segment is worse than the live version's by
more than the margin; an admin may override it, with a reason that is recorded beside the
evidence on the control topic (and so in the audit trail).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from tandem_shared.fairness import Gap


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scores(_Strict):
    """One version on the held-out rows."""

    accuracy: float = Field(ge=0, le=1)
    brier: float = Field(ge=0)
    ece: float = Field(ge=0, le=1, description="expected calibration error, 10 bins")
    automation_rate: float = Field(ge=0, le=1, description="under the active policy")
    automated_accuracy: float | None = Field(default=None, ge=0, le=1)


class SegmentResult(_Strict):
    name: str
    rows: int = Field(ge=0)
    live_error: float = Field(ge=0, le=1)
    candidate_error: float = Field(ge=0, le=1)
    # the candidate's error here is worse than its error on all rows by more than the margin
    weak: bool
    # The candidate under the policy on these rows, and how that departs from all rows
    # (automation_rate, automated_accuracy, error: the segment's minus the whole's).
    automation_rate: float | None = Field(default=None, ge=0, le=1)
    automated_accuracy: float | None = Field(default=None, ge=0, le=1)
    automated_accuracy_interval: tuple[float, float] | None = None  # Wilson, 95%
    # What happened live on these rows: people's labels against the model that scored them
    # (overrides), and on the QA samples among them (automatic decisions people checked).
    override_rate: float | None = Field(default=None, ge=0, le=1)
    qa_samples: int = Field(default=0, ge=0)
    qa_accuracy: float | None = Field(default=None, ge=0, le=1)
    qa_accuracy_interval: tuple[float, float] | None = None  # Wilson, 95%
    disparity: dict[str, Gap] = Field(default_factory=dict)


class Evidence(_Strict):
    model: str
    live: str
    candidate: str
    rows: int = Field(ge=0, description="held-out rows: people's labels the candidate never saw")
    labelled_since: datetime | None = None
    labelled_until: datetime | None = None
    policy: str | None = None
    margin: float = Field(ge=0, le=1)
    live_scores: Scores
    candidate_scores: Scores
    segments: list[SegmentResult] = Field(default_factory=list)


def refusals(evidence: Evidence, version: str) -> list[str]:
    """Why the gate refuses to promote ``version`` on this evidence (empty: it may go live)."""
    if evidence.candidate != version:
        return [f"the evidence is about version {evidence.candidate}, not {version}"]
    if evidence.rows == 0:
        return ["the evidence holds no labelled rows"]
    found = []
    live, candidate = evidence.live_scores, evidence.candidate_scores
    if candidate.accuracy < live.accuracy:
        found.append(
            f"less accurate overall: {candidate.accuracy:.3f} against {live.accuracy:.3f} live"
        )
    for s in evidence.segments:
        if s.rows and s.candidate_error > s.live_error + evidence.margin:
            found.append(
                f"worse on segment {s.name}: error {s.candidate_error:.3f} against "
                f"{s.live_error:.3f} live ({s.rows} rows, margin {evidence.margin:.3f})"
            )
    return found


class Promotion(_Strict):
    """What a promotion records beside the new model state: its evidence, what the gate said,
    and the admin's reason when the gate was overridden."""

    version: str
    evidence: Evidence | None = None
    refused_for: list[str] = Field(default_factory=list)
    override_reason: str | None = None


class GateRefused(ValueError):
    """The gate refuses the promotion; the message says why and how to override."""


def gate(version: str, evidence: Evidence | None, override_reason: str | None) -> Promotion:
    """The promotion to record, or GateRefused. No evidence at all needs an override too."""
    reasons = refusals(evidence, version) if evidence else ["no validation evidence was given"]
    if reasons and not (override_reason and override_reason.strip()):
        raise GateRefused("; ".join(reasons) + " (an admin may override with a reason)")
    return Promotion(
        version=version,
        evidence=evidence,
        refused_for=reasons,
        override_reason=override_reason.strip() if reasons and override_reason else None,
    )
