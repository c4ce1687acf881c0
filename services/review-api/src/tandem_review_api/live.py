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
    """The changes one client has not seen yet, read from ``since`` on."""

    def __init__(self, store: ReviewStore, since: datetime) -> None:
        self.store = store
        self.cursor = since
        self._sent: dict[str, datetime] = {}  # review id → the change already sent

    async def next_changes(self) -> list[RowMapping]:
        rows = await self.store.changed_since(self.cursor - LOOK_BACK)
        fresh = [r for r in rows if self._sent.get(r["review_id"]) != r["updated_at"]]
        for r in fresh:
            self._sent[r["review_id"]] = r["updated_at"]
            self.cursor = max(self.cursor, r["updated_at"])
        horizon = self.cursor - LOOK_BACK
        self._sent = {k: v for k, v in self._sent.items() if v >= horizon}
        return fresh


async def stream(
    feed: ChangeFeed,
    disconnected: Callable[[], Any],
    poll_s: float,
) -> AsyncIterator[str]:
    """``review`` events (the review as the queue shows it) until the client goes away, with a
    comment now and then so proxies keep the connection open."""
    yield ": connected\n\n"
    quiet = 0.0
    while not await disconnected():
        changes = await feed.next_changes()
        now = utcnow()
        for row in changes:
            yield frame("review", review_item(row, now), row["updated_at"].isoformat())
        quiet = 0.0 if changes else quiet + poll_s
        if quiet >= KEEP_ALIVE_S:
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(poll_s)
