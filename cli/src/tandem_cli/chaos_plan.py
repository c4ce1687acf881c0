"""A chaos run's plan (what the command line asks for) and the state of a scenario under way."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal, get_args

from rich.console import Console
from tandem_shared.settings import KafkaSettings

from tandem_cli.chaos_report import Faults
from tandem_cli.chaos_stack import ChaosStack, StackSettings
from tandem_cli.chaos_workload import DecisionWatch, Workload
from tandem_cli.reviewers import Desk

Scenario = Literal["kills", "outage", "all"]
SCENARIOS: tuple[Scenario, ...] = get_args(Scenario)


@dataclass(frozen=True)
class Plan:
    scenario: Scenario = "kills"
    tasks: int = 3000
    rate: float = 50.0
    kills: int = 8
    broker_restarts: int = 1
    broker_down_s: float = 5.0
    outage_s: float = 30.0
    outage_tasks: int = 200
    postgres_down_s: float = 5.0
    reviewers: int = 4
    # Three: a critical review the policy escalates needs two seniors behind its outcome, and
    # when two disagree a third settles it.
    seniors: int = 3
    seed: int = 42
    wait_s: float = 300.0  # for every task's decision once the workload is done
    stack: StackSettings = field(default_factory=StackSettings)

    def command(self) -> str:
        """The command line that runs this plan again."""
        return (
            f"uv run --frozen tandem chaos --scenario {self.scenario} --tasks {self.tasks} "
            f"--rate {self.rate:g} --kills {self.kills} --broker-restarts "
            f"{self.broker_restarts} --broker-down {self.broker_down_s:g} --outage-seconds "
            f"{self.outage_s:g} --outage-tasks {self.outage_tasks} --reviewers "
            f"{self.reviewers} --wait {self.wait_s:g} --seed {self.seed}"
        )


@dataclass
class Run:
    """One scenario under way: its workload, its people, the faults done, the watchers."""

    stack: ChaosStack
    plan: Plan
    work: Workload
    console: Console
    faults: Faults
    desk: Desk
    watch: DecisionWatch
    lock: asyncio.Lock  # held while a fault is injected: the liveness probe waits
    started: float
    people: list[asyncio.Task[None]] = field(default_factory=list)
    people_stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def dismiss_people(self) -> None:
        """The simulated people stop (their QA reviews would keep the ledger growing)."""
        self.people_stop.set()
        await asyncio.gather(*self.people, return_exceptions=True)

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.stack.broker.bootstrap_servers,
            topic_prefix=self.stack.topics.prefix,
        )

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/dim] {text}")
