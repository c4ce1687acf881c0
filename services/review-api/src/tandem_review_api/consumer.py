"""Materialises what Kafka says about tasks: routed to people, decided."""

from __future__ import annotations

from collections.abc import Sequence

from tandem_shared.db import unavailable_is_transient
from tandem_shared.envelope import Event, header_map, utcnow
from tandem_shared.events import DecisionMade, EventData, TaskRouted
from tandem_shared.kafka import Incoming, Result

from tandem_review_api.store import ReviewStore, RoutedRecord

ACCEPTED: dict[str, type[EventData]] = {
    "tandem.task.routed.v1": TaskRouted,
    "tandem.decision.made.v1": DecisionMade,
}


class QueueMaterializer:
    def __init__(self, store: ReviewStore) -> None:
        self.store = store

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        routed: list[RoutedRecord] = []
        decided: list[DecisionMade] = []
        for item in batch:
            data = item.item.data
            if isinstance(data, TaskRouted):
                routed.append(RoutedRecord(data, header_map(item.headers).get("traceparent")))
            elif isinstance(data, DecisionMade):
                decided.append(data)
        # A database outage is retried until it ends: the records must not be dead-lettered.
        with unavailable_is_transient("review database"):
            await self.store.ingest(routed, decided, utcnow())
        return [[] for _ in batch]
