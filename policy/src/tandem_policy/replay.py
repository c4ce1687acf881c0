"""Reading back a time window of the pipeline from Kafka: the scored events it routed, and the
outcomes people gave them, for a what-if of a proposed policy."""

from __future__ import annotations

from datetime import datetime

from tandem_shared.envelope import Event
from tandem_shared.events import DecisionMade, EventData, FeedbackRecorded, TaskScored
from tandem_shared.reading import read_events
from tandem_shared.topics import Topics

SCORED: dict[str, type[EventData]] = {"tandem.task.scored.v1": TaskScored}
DECIDED: dict[str, type[EventData]] = {"tandem.decision.made.v1": DecisionMade}
LABELLED: dict[str, type[EventData]] = {"tandem.feedback.recorded.v1": FeedbackRecorded}


async def scored_between(
    bootstrap_servers: str, topics: Topics, since: datetime, until: datetime
) -> list[TaskScored]:
    """The scored events appended to the topic in [since, until), in partition order."""
    out: list[TaskScored] = []

    def keep(event: Event[EventData]) -> None:
        if isinstance(event.data, TaskScored):
            out.append(event.data)

    await read_events(bootstrap_servers, topics.scored, SCORED, keep, since, until)
    return out


async def human_outcomes(bootstrap_servers: str, topics: Topics, since: datetime) -> dict[str, str]:
    """Task id → the outcome people gave, from records appended since ``since`` (a review ends
    after its task was scored, so the window runs to the end of the topics): the human decision
    where there is one, else a reviewer's label on the feedback topic (QA samples of automatic
    decisions have only that)."""
    decided: dict[str, str] = {}
    labelled: dict[str, str] = {}

    def keep(event: Event[EventData]) -> None:
        data = event.data
        if isinstance(data, DecisionMade) and data.decided_by == "human":
            decided[data.task_id] = data.outcome
        elif isinstance(data, FeedbackRecorded):
            labelled[data.task_id] = data.label

    await read_events(bootstrap_servers, topics.decisions, DECIDED, keep, since)
    await read_events(bootstrap_servers, topics.feedback, LABELLED, keep, since)
    return {**labelled, **decided}
