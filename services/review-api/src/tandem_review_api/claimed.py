"""The reviews this replica handed out by claim-next, as the claim left them: deciding one then
needs no read first, so a claim and its decision are a round trip each. A hint, never the
truth: the decision's write is guarded by the claim as read, so a review whose claim changed
since (a heartbeat or a release here or on another replica, a claim that lapsed) is read
again and decided on what the database says."""

from __future__ import annotations

from datetime import datetime

from tandem_shared.auth import Principal

from tandem_review_api.hotpath import Snapshot

# About as many as 1,000 reviewers hold at once (five each at most, by default), a few KB each.
REMEMBERED = 5_000


class ClaimedReviews:
    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._claimed: dict[str, Snapshot] = {}

    def remember(self, claimed: Snapshot) -> None:
        if len(self._claimed) >= self.size:  # the oldest claim goes first
            del self._claimed[next(iter(self._claimed))]
        self._claimed[claimed.review.review_id] = claimed

    def take(self, review_id: str, who: Principal, now: datetime) -> Snapshot | None:
        """The review as ``who`` claimed it, while their lease (as claimed) lasts; forgotten
        either way. A lease that ran out may have been extended since: read it again."""
        claimed = self.peek(review_id, who, now)
        self.forget(review_id)
        return claimed

    def peek(self, review_id: str, who: Principal, now: datetime) -> Snapshot | None:
        """As ``take``, but the claim stays remembered for the decision."""
        claimed = self._claimed.get(review_id)
        if claimed is None:
            return None
        review = claimed.review
        return claimed if review.claimed_by == who.subject and review.lease_held(now) else None

    def forget(self, review_id: str) -> None:
        self._claimed.pop(review_id, None)
