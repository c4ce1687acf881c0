"""The review rules, apart from storage and transport: who may claim, who may decide, and what
a decision turns into (a final decision, a wait for another approver, or an escalation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from tandem_shared.auth import Principal
from tandem_shared.events import DecisionMade, FeedbackRecorded, FirstLook, ReviewTime, TaskRouted

from tandem_review_api.errors import Conflict, Unprocessable

Status = Literal["pending", "claimed", "escalated", "decided"]


@dataclass(frozen=True)
class Rating:
    """What a reviewer may say of the model on a case with their decision: how useful its
    explanation was and how much they trust it here (1 to 5), and a note."""

    explanation_useful: int | None = None
    trust: int | None = None
    note: str | None = None


UNRATED = Rating()


@dataclass(frozen=True)
class Approval:
    reviewer: str
    outcome: str
    rationale: str
    at: datetime | None = None  # when it was given
    claimed_at: datetime | None = None  # when the approver's claim began
    active_seconds: float | None = None  # the time they worked on it (None: not measured)
    rating: Rating = UNRATED

    def time(self) -> ReviewTime | None:
        if self.at is None:
            return None
        return ReviewTime(
            reviewer=self.reviewer,
            claimed_at=self.claimed_at,
            decided_at=self.at,
            active_seconds=self.active_seconds,
        )


@dataclass(frozen=True)
class Review:
    review_id: str
    status: Status
    routed: TaskRouted
    claimed_by: str | None
    lease_expires_at: datetime | None
    approvals: tuple[Approval, ...] = ()
    senior_only: bool = False
    claimed_at: datetime | None = None  # when the holder's claim began
    # The holder's time on task: seconds worked up to their last sign of work, at active_at.
    active_seconds: float | None = None
    active_at: datetime | None = None

    @property
    def escalated(self) -> bool:
        """Routed for escalation, or approvers disagreed: only a senior reviewer settles it."""
        return self.senior_only or len({a.outcome for a in self.approvals}) > 1

    def lease_held(self, now: datetime) -> bool:
        return (
            self.status == "claimed"
            and self.claimed_by is not None
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


@dataclass(frozen=True)
class ClaimLimits:
    """How long a claim holds a review, how long heartbeats may keep it, and how many reviews
    one person may hold at once: nobody hoards the queue. ``away_after``: a gap between two
    signs of work on a claim longer than this counts only this long (its holder was away)."""

    lease: timedelta
    longest: timedelta
    per_reviewer: int
    away_after: timedelta = timedelta(minutes=2)

    def active(self, review: Review, who: Principal, now: datetime) -> float:
        """The time on task a claim (or a heartbeat) by ``who`` now leaves: counted on from
        their live claim, from zero for a new one."""
        held = review.lease_held(now) and review.claimed_by == who.subject
        return (active_after(review, now, self.away_after) or 0.0) if held else 0.0

    def lease_until(self, review: Review, who: Principal, now: datetime) -> datetime:
        """The lease a claim or heartbeat gives now: one more lease, but never past the
        longest hold since the holder's claim began (a new claim begins now)."""
        held = review.lease_held(now) and review.claimed_by == who.subject
        if not (held and review.claimed_at is not None):
            return self.new_lease(now)
        until = min(now + self.lease, review.claimed_at + self.longest)
        if until <= now:
            raise Conflict(
                f"you have held review {review.review_id} for the longest a claim may last"
                f" ({self.longest}): decide it, escalate it or release it"
            )
        return until

    def new_lease(self, now: datetime) -> datetime:
        """The lease of a claim that begins now."""
        return now + min(self.lease, self.longest)

    def check_count(self, review: Review, who: Principal, held: int, now: datetime) -> None:
        """``held``: the reviews ``who`` holds now. Taking one more must stay within the limit;
        claiming again what one holds takes nothing more."""
        if review.lease_held(now) and review.claimed_by == who.subject:
            return
        self.check_held(held)

    def check_held(self, held: int) -> None:
        """Refuses one more claim to a person who holds ``held`` reviews already."""
        if held >= self.per_reviewer:
            raise Conflict(
                f"you hold {held} reviews, the most one person may: decide or release one first"
            )


def active_after(review: Review, now: datetime, away_after: timedelta) -> float | None:
    """The seconds the holder has worked on their claim by ``now``: what its claim and
    heartbeats counted, and the time since the last of them, up to ``away_after``. None for a
    claim made before time on task was counted."""
    if review.active_at is None:
        return None
    gap = min(max(now - review.active_at, timedelta(0)), away_after)
    return round((review.active_seconds or 0.0) + gap.total_seconds(), 3)  # to the millisecond


@dataclass(frozen=True)
class Step:
    """What a recorded approval leads to."""

    kind: Literal["decided", "awaiting_approval", "escalated"]
    outcome: str | None = None


def check_claim(review: Review, who: Principal, now: datetime) -> None:
    if review.status == "decided":
        raise Conflict(f"review {review.review_id} is already decided")
    named = review.routed.queue
    if named is not None and named not in who.qualifications:
        raise Conflict(
            f"review {review.review_id} is in the {named} queue: your token does not qualify you"
        )
    if review.escalated and not who.has("senior"):
        raise Conflict(f"review {review.review_id} is escalated: a senior reviewer must take it")
    if review.lease_held(now) and review.claimed_by != who.subject:
        raise Conflict(f"review {review.review_id} is claimed by {review.claimed_by}")
    if any(a.reviewer == who.subject for a in review.approvals):
        raise Conflict(
            f"{who.subject} already approved review {review.review_id}; another reviewer must"
        )


def check_decision(
    review: Review,
    who: Principal,
    outcome: str,
    now: datetime,
    first_looks: Mapping[str, str] | None = None,
) -> None:
    """``first_looks``: the verdicts given blind on the review, by reviewer (a blind review is
    decided only by someone who gave one)."""
    _check_held(review, who, outcome, now)
    if review.routed.blind and who.subject not in (first_looks or {}):
        raise Conflict(
            f"review {review.review_id} is blind: record your first look"
            f" (POST /v1/reviews/{review.review_id}/first-look) before you decide"
        )


def check_first_look(review: Review, who: Principal, outcome: str, now: datetime) -> None:
    """A verdict before the reveal: on a blind review, by the holder of its claim."""
    _check_held(review, who, outcome, now)
    if not review.routed.blind:
        raise Conflict(f"review {review.review_id} is not blind: its model view is shown")


def _check_held(review: Review, who: Principal, outcome: str, now: datetime) -> None:
    allowed = review.routed.outcomes
    if outcome not in allowed:
        raise Unprocessable(f"outcome {outcome!r} is not allowed; allowed: {', '.join(allowed)}")
    if review.status == "decided":
        raise Conflict(f"review {review.review_id} is already decided")
    if not (review.lease_held(now) and review.claimed_by == who.subject):
        raise Conflict(f"you do not hold the claim on review {review.review_id}; claim it first")


def next_step(review: Review, approval: Approval, who: Principal) -> Step:
    """A decision needs ``required_approvals`` distinct people who gave its outcome, however
    the review got there. Approvers who disagree send it to a senior; an escalated review (by
    the policy, by its holder or by a disagreement) is settled by a senior's approval, and
    only once enough people stand behind the outcome: another senior takes it until then."""
    if review.escalated and not who.has("senior"):
        raise Conflict(f"review {review.review_id} is escalated: a senior reviewer decides it")
    given = (*review.approvals, approval)
    if not review.escalated and len({a.outcome for a in given}) > 1:
        return Step("escalated")
    backing = {a.reviewer for a in given if a.outcome == approval.outcome}
    if len(backing) < review.routed.required_approvals:
        return Step("awaiting_approval")
    return Step("decided", approval.outcome)


def decision(
    review: Review,
    outcome: str,
    rationale: str,
    given: tuple[Approval, ...],
    now: datetime,
    decided_by: Literal["human", "policy"] = "human",
    first_looks: list[FirstLook] | None = None,
) -> DecisionMade:
    """``given``: the approvals behind the decision, in order (none for the policy's)."""
    routed = review.routed
    return DecisionMade(
        task_id=routed.task.task_id,
        task_type=routed.task.task_type,
        outcome=outcome,
        decided_by=decided_by,
        confidence=routed.score.confidence,
        model=routed.score.model,
        policy=routed.policy,
        reviewers=[a.reviewer for a in given],
        rationale=rationale,
        overrode_model=outcome != routed.score.prediction,
        submitted_at=routed.submitted_at,
        decided_at=now,
        first_looks=first_looks or [],
        review_times=[t for t in (a.time() for a in given) if t is not None],
        segment=routed.segment,
    )


def first_looks_of(
    review: Review, approval: Approval, given_blind: Mapping[str, str]
) -> list[FirstLook]:
    """Each approver's verdict before and after the reveal, the new approval last."""
    return [
        FirstLook(
            reviewer=a.reviewer,
            before=given_blind[a.reviewer],
            after=a.outcome,
            changed=a.outcome != given_blind[a.reviewer],
        )
        for a in (*review.approvals, approval)
        if a.reviewer in given_blind
    ]


def feedback(
    review: Review, approval: Approval, now: datetime, first_look: str | None = None
) -> FeedbackRecorded:
    """``first_look``: the reviewer's verdict before the reveal, on a blind review."""
    routed = review.routed
    label, reviewer = approval.outcome, approval.reviewer
    return FeedbackRecorded(
        task_id=routed.task.task_id,
        task_type=routed.task.task_type,
        features=routed.task.features,
        model=routed.score.model,
        prediction=routed.score.prediction,
        probabilities=routed.score.probabilities,
        confidence=routed.score.confidence,
        label=label,
        reviewer=reviewer,
        qa_sample=routed.qa_sample,
        agreed=label == routed.score.prediction,
        policy=routed.policy,
        labelled_at=now,
        first_look=first_look,
        changed_after_reveal=None if first_look is None else label != first_look,
        claimed_at=approval.claimed_at,
        active_seconds=approval.active_seconds,
        explanation_useful=approval.rating.explanation_useful,
        trust=approval.rating.trust,
        note=approval.rating.note,
        segment=routed.segment,
    )


def overdue_step(review: Review) -> Literal["escalate", "pending", "fallback"]:
    """What the policy says happens to this review now that it is past its due time. A QA
    sample's task was already decided by the model: it only stays, counted late. A task that
    needs people (critical, or more than one approval) is never decided by the fallback
    outcome, nor is one whose fallback names none: it goes to a senior instead."""
    routed = review.routed
    if routed.qa_sample:
        return "pending"
    step = routed.on_overdue
    if step == "fallback" and (routed.fallback_outcome is None or needs_people(routed)):
        step = "escalate"
    if step == "escalate" and review.escalated:
        return "pending"  # already with the seniors
    return step


def needs_people(routed: TaskRouted) -> bool:
    """The two-person rule's tasks: no decision without the people it names."""
    return routed.task.critical or routed.required_approvals > 1


def fallback_decision(review: Review, now: datetime) -> DecisionMade:
    """The policy's stated outcome for a review nobody decided in time."""
    routed = review.routed
    outcome = routed.fallback_outcome
    assert outcome is not None
    why = f"not decided by {routed.due_at.isoformat()}: the policy's fallback outcome"
    return decision(review, outcome, why, (), now, decided_by="policy")
