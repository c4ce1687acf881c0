"""Materialises what Kafka says about tasks: routed to people, decided."""

from __future__ import annotations

from collections.abc import Sequence

from tandem_shared.db import unavailable_is_transient
from tandem_shared.envelope import Event, header_map, utcnow
from tandem_shared.events import DecisionMade, EventData, TaskRouted
from tandem_shared.kafka import Incoming, Rejected, Result

from tandem_review_api.authorship import DecisionTrust
from tandem_review_api.store import ReviewStore, RoutedRecord

ACCEPTED: dict[str, type[EventData]] = {
    "tandem.task.routed.v1": TaskRouted,
    "tandem.decision.made.v1": DecisionMade,
}


class QueueMaterializer:
    def __init__(self, store: ReviewStore, trust: DecisionTrust) -> None:
        self.store = store
        self.trust = trust

    async def __call__(self, batch: Sequence[Incoming[Event[EventData]]]) -> list[Result]:
        routed: list[RoutedRecord] = []
        decided: list[DecisionMade] = []
        results: list[Result] = []
        for item in batch:
            event = item.item
            data = event.data
            results.append([])
            if isinstance(data, TaskRouted):
                routed.append(RoutedRecord(data, header_map(item.headers).get("traceparent")))
            elif isinstance(data, DecisionMade):
                # A people's decision nobody trusted signed is dead-lettered, changing nothing.
                reason = self.trust.refusal(event.source, event.id, data)
                if reason is None:
                    decided.append(data)
                else:
                    results[-1] = Rejected(f"decision refused: {reason.replace('_', ' ')}")
        # A database outage is retried until it ends: the records must not be dead-lettered.
        with unavailable_is_transient("review database"):
            await self.store.ingest(routed, decided, utcnow())
        return results
