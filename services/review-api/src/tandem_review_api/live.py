"""Server-sent events of queue changes, so a console never polls.

Every replica reads the changes from the shared database (reviews record when they last
changed), so a client sees what every replica did, whichever one it is connected to. Changes
committed out of time order are caught by reading a short way back and remembering what was
already sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping
from tandem_shared.auth import Principal
from tandem_shared.envelope import utcnow

from tandem_review_api.store import ReviewStore, review_item

# How far back each read looks: longer than any transaction that writes a review takes.
LOOK_BACK = timedelta(seconds=5)
KEEP_ALIVE_S = 15.0


def frame(event: str, data: Mapping[str, Any], event_id: str | None = None) -> str:
    """One server-sent event."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


class ChangeFeed:
    """The changes one client has not seen yet, read from ``since`` on, as ``who`` may see
    them: a review they may not see is not sent, and one sent before that they may no longer
    see (another reviewer claimed it) is sent as gone."""

    def __init__(self, store: ReviewStore, since: datetime, who: Principal) -> None:
        self.store = store
        self.cursor = since
        self.who = who
        self._sent: dict[str, datetime] = {}  # review id → the change already looked at
        self._shown: set[str] = set()  # reviews the client was sent and may still see

    async def next_changes(self, now: datetime) -> list[tuple[RowMapping, bool]]:
        """(the review, whether the client may see it) for each change to show: the visible
        ones, and those that left the client's view."""
        rows = await self.store.changed_since(self.cursor - LOOK_BACK, self.who, now)
        fresh = [r for r in rows if self._sent.get(r["review_id"]) != r["updated_at"]]
        shown = []
        for r in fresh:
            self._sent[r["review_id"]] = r["updated_at"]
            self.cursor = max(self.cursor, r["updated_at"])
            if r["visible"]:
                # A decided review never leaves a view it is in: not remembered, so what is
                # remembered stays as small as the open queue.
                if r["status"] == "decided":
                    self._shown.discard(r["review_id"])
                else:
                    self._shown.add(r["review_id"])
                shown.append((r, True))
            elif r["review_id"] in self._shown:
                self._shown.discard(r["review_id"])
                shown.append((r, False))
        horizon = self.cursor - LOOK_BACK
        self._sent = {k: v for k, v in self._sent.items() if v >= horizon}
        return shown


async def stream(
    feed: ChangeFeed,
    disconnected: Callable[[], Any],
    poll_s: float,
    until: datetime | None,
) -> AsyncIterator[str]:
    """``review`` events (the review as the queue shows it) and ``gone`` events (a review the
    client may no longer see: its id alone) until the client goes away or ``until`` (its
    token's expiry: then an ``expired`` event), with a comment now and then so proxies keep
    the connection open."""
    yield ": connected\n\n"
    quiet = 0.0
    while not await disconnected():
        now = utcnow()
        if until is not None and now >= until:
            yield frame("expired", {"detail": "the token expired: connect with a new one"})
            return
        changes = await feed.next_changes(now)
        for row, visible in changes:
            event_id = row["updated_at"].isoformat()
            if visible:
                yield frame("review", review_item(row, now), event_id)
            else:
                yield frame("gone", {"review_id": row["review_id"]}, event_id)
        quiet = 0.0 if changes else quiet + poll_s
        if quiet >= KEEP_ALIVE_S:
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(poll_s)


class Subscribers:
    """How many live streams this process serves; past the cap, new ones are turned away."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count >= self.cap

    async def counted(self, events: AsyncIterator[str]) -> AsyncIterator[str]:
        """``events``, counted while they flow."""
        self.count += 1
        try:
            async for event in events:
                yield event
        finally:
            self.count -= 1
