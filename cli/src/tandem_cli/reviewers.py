"""Simulated people working the review queue over HTTP as a front-end would: list, claim, read,
decide, next. The demo and the chaos harness both run them.

They behave like people at a browser: an API that does not answer (restarting, its database
down) is tried again a moment later, and a claim that another person took first is left to them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from tandem_shared.auth import mint_token
from tandem_shared.batches import sleep_or_stop
from tandem_shared.settings import RuntimeSettings

ACCURACY = 0.97  # simulated people are good, not perfect
# On a blind review, how often a person whose verdict differed from the model's takes the
# model's outcome once it is shown: automation bias, for the report to find.
SWAYED = 0.3
PICK = 5  # reviews a person takes from one look at the queue
IDLE_S = 0.2  # an empty queue is looked at again after this
RETRY_S = 0.5  # an API that did not answer is called again after this


class Unanswered(Exception):
    """The API gave no usable answer: not reachable, or a 5xx."""


@dataclass
class Desk:
    """What the simulated people of one run share: the API, the run's tasks with their true
    labels (reviews of other tasks are left alone), and counts of what they did."""

    api: str
    truth: Mapping[str, str]
    accuracy: float = ACCURACY
    decided: int = 0  # decisions the API accepted (approvals of critical tasks included)
    unanswered: int = 0  # requests without an answer: the API restarting, its database down

    def __post_init__(self) -> None:
        self.labels = sorted(set(self.truth.values()))


class Reviewer:
    """One simulated person; seniors look at the escalated queue first."""

    def __init__(self, desk: Desk, name: str, role: str, rng: random.Random) -> None:
        self.desk = desk
        self.name = name
        self.rng = rng
        self.queues = ["escalated", "pending"] if role == "senior" else ["pending"]
        self.headers = {"Authorization": f"Bearer {mint_token(RuntimeSettings(), name, [role])}"}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.desk.api, headers=self.headers, timeout=30)

    async def work(self, stop: asyncio.Event) -> None:
        """Work the queue until ``stop``: list, claim, read the case, decide, next."""
        async with self.client() as client:
            while not stop.is_set():
                try:
                    await self._round(client, stop)
                except Unanswered:
                    self.desk.unanswered += 1
                    await sleep_or_stop(stop, RETRY_S)

    async def _round(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        mine = await self.waiting(client)
        self.rng.shuffle(mine)  # people do not all grab the same first item
        if not mine:
            await sleep_or_stop(stop, IDLE_S)
            return
        for item in mine[:PICK]:
            if stop.is_set():
                return
            if not await self.claim(client, item):
                continue  # someone else has it, or I already approved it
            await asyncio.sleep(self.rng.uniform(0.01, 0.05))  # reading the case
            await self.decide(client, item)

    async def waiting(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """The first reviews of this run in the first of my queues that has any."""
        for queue in self.queues:
            mine = await self._this_runs_reviews(client, queue)
            if mine:
                return mine
        return []

    async def hold(self, client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
        """Claim up to ``count`` reviews and keep them, to decide later."""
        held: list[dict[str, Any]] = []
        for item in await self.waiting(client):
            if len(held) == count:
                break
            if await self.claim(client, item):
                held.append(item)
        return held

    async def claim(self, client: httpx.AsyncClient, item: dict[str, Any]) -> bool:
        response = await _call(client, "POST", f"/v1/reviews/{item['review_id']}/claim")
        return response.status_code == 200

    async def heartbeat(self, client: httpx.AsyncClient, item: dict[str, Any]) -> bool:
        """Keep the lease on a review I hold."""
        response = await _call(client, "POST", f"/v1/reviews/{item['review_id']}/heartbeat")
        return response.status_code == 200

    async def decide(self, client: httpx.AsyncClient, item: dict[str, Any]) -> int:
        """Decide a review I hold, right most of the time; the API's status code. A blind
        review gets my verdict first; seeing the model's, I may take it instead."""
        right = self.desk.truth[item["task_id"]]
        accurate = self.rng.random() < self.desk.accuracy
        outcome = right if accurate else self.rng.choice(self.desk.labels)
        if item.get("blind") and not item.get("revealed"):
            shown = await self.first_look(client, item, outcome)
            if shown is None:
                return 409
            item = shown
            if outcome != item["prediction"] and self.rng.random() < SWAYED:
                outcome = item["prediction"]
        agrees = outcome == item["prediction"]
        rationale = "agree with the model" if agrees else f"features indicate {outcome}"
        response = await _call(
            client,
            "POST",
            f"/v1/reviews/{item['review_id']}/decision",
            json={"outcome": outcome, "rationale": rationale},
        )
        if response.status_code == 200:
            self.desk.decided += 1
        return response.status_code

    async def first_look(
        self, client: httpx.AsyncClient, item: dict[str, Any], verdict: str
    ) -> dict[str, Any] | None:
        """Record my verdict on a blind review I hold; the review with the model's view, or
        None when I no longer hold it. Recorded already (the answer was lost the first time),
        the review is read again."""
        url = f"/v1/reviews/{item['review_id']}"
        response = await _call(client, "POST", f"{url}/first-look", json={"outcome": verdict})
        if response.status_code == 409 and "already" in response.text:
            response = await _call(client, "GET", url)
        return dict(response.json()) if response.status_code == 200 else None

    async def _this_runs_reviews(
        self, client: httpx.AsyncClient, queue: str
    ) -> list[dict[str, Any]]:
        """The first reviews of this run in a queue, paging past work left by earlier runs."""
        params: dict[str, str | int] = {"status": queue, "limit": 100}
        while True:
            page = (await _call(client, "GET", "/v1/reviews", params=params)).json()
            mine = [i for i in page["items"] if i["task_id"] in self.desk.truth]
            if mine or not page["next_cursor"]:
                return mine
            params["cursor"] = page["next_cursor"]


def people(desk: Desk, reviewers: int, seniors: int, seed: int) -> list[Reviewer]:
    """``reviewers`` reviewers and ``seniors`` senior reviewers, each with a seeded hand."""
    return [
        Reviewer(desk, f"reviewer-{i + 1}", "reviewer", random.Random(seed + i))
        for i in range(reviewers)
    ] + [
        Reviewer(desk, f"senior-{i + 1}", "senior", random.Random(seed - 1 - i))
        for i in range(seniors)
    ]


def work_queue(
    desk: Desk, reviewers: int, seniors: int, seed: int, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """Start simulated people working the review queue until ``stop``. Escalations (near coin
    tosses, disagreements on critical work) need a senior, and a critical one two approvals
    from different people."""
    return [
        asyncio.create_task(person.work(stop), name=person.name)
        for person in people(desk, reviewers, seniors, seed)
    ]


async def _call(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise Unanswered(f"{method} {url}: {exc!r}") from exc
    if response.status_code >= 500:
        raise Unanswered(f"{method} {url}: {response.status_code}")
    return response
