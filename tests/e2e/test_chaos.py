"""Exactly one decision per task, nothing lost, under failures: the chaos harness's short runs
on a stack of its own (its own broker, PostgreSQL and the four services as processes).

- kills: 2,000 submissions at 50/s (about 1% of them an earlier task id again), people deciding
  over HTTP, a random service SIGKILLed and restarted 6 times and the broker once;
- outage: the broker down 10 s while 50 tasks come over HTTP ingress and people decide the
  reviews they held; then PostgreSQL stopped at once under load and started again.

`make chaos` runs the long versions (docs/operations.md, "Proving delivery under failure").
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from rich.console import Console
from tandem_cli.chaos import run
from tandem_cli.chaos_plan import Plan
from tandem_cli.chaos_report import Report

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

PLAN = Plan(
    "all",
    tasks=2000,
    rate=50,
    kills=6,
    broker_restarts=1,
    outage_s=10,
    outage_tasks=50,
    wait_s=240,
)


@pytest.fixture(scope="module")
def reports() -> Iterator[dict[str, Report]]:
    done = run(PLAN, Console(file=sys.stdout, width=120, force_terminal=False))
    yield {r.scenario: r for r in done}


def failed(report: Report) -> list[str]:
    return [f"{name}: {detail}" for name, passed, detail in report.checks() if not passed]


def test_every_task_decided_once_while_services_and_the_broker_are_killed(
    reports: dict[str, Report],
) -> None:
    kills = reports["kills"]
    assert kills.unique > 1950
    assert len(kills.decisions.events) == kills.unique
    assert kills.missing == 0
    assert kills.decisions.conflicting() == []
    assert kills.dead_letters == []
    assert kills.verify["ok"], kills.verify
    assert kills.completeness["missing_stages"] == {}
    assert kills.completeness["events_without_task"] == {}
    assert kills.completeness["decided_more_than_once"] == {}
    assert sum(kills.faults.kills.values()) >= PLAN.kills
    assert kills.faults.broker_restarts >= PLAN.broker_restarts
    assert failed(kills) == []


def test_every_task_decided_once_through_a_broker_outage_and_a_database_restart(
    reports: dict[str, Report],
) -> None:
    outage = reports["outage"]
    assert outage.missing == 0
    assert outage.decisions.conflicting() == []
    assert outage.dead_letters == []
    assert outage.verify["ok"], outage.verify
    assert outage.completeness["missing_stages"] == {}
    assert outage.completeness["decided_more_than_once"] == {}
    assert outage.faults.broker_restarts >= 1
    assert outage.faults.postgres_restarts >= 1
    assert failed(outage) == []  # the HTTP ingress's 202s and the held reviews among them
