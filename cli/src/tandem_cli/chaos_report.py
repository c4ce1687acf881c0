"""A chaos run's report: what was submitted and done to the stack, what the decisions topic,
the dead-letter topic and the audit ledger say (chaos_readback.py reads them), the checks
that prove "exactly one decision per task, nothing lost", and the table that shows it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

SHOWN = 5  # task ids or letters named in a report line


@dataclass
class Faults:
    """What was done to the stack during a run."""

    kills: Counter[str] = field(default_factory=Counter)  # SIGKILLed and started again
    broker_restarts: int = 0
    postgres_restarts: int = 0
    # Restarted by the harness as a liveness probe would: /healthz failing, or the process
    # gone on its own. Not a fault the harness injected: each one is worth reading about.
    supervised: Counter[str] = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)  # fault to every service ready, s
    not_recovered: list[str] = field(default_factory=list)  # faults the stack did not get over


@dataclass
class Decisions:
    """The decisions topic read from its start, for the task ids of one run."""

    records: int = 0  # of the run's tasks
    tasks: int = 0  # distinct task ids decided on the whole topic (every run on the stack)
    events: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    outcomes: dict[str, set[str]] = field(default_factory=dict)
    decided_by: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # submitted to decided, s, a task

    @property
    def duplicates(self) -> int:
        """Records that repeat an event already read: same source, id and content."""
        return self.records - sum(len(e) for e in self.events.values())

    def conflicting(self) -> list[str]:
        """Tasks with more than one distinct decision event, or outcome."""
        return sorted(t for t, e in self.events.items() if len(e) > 1 or len(self.outcomes[t]) > 1)


@dataclass
class Report:
    scenario: str
    command: str  # the command that repeats the run
    submissions: int
    unique: int
    resubmitted: set[str]
    critical: int
    decisions: Decisions
    dead_letters: list[str]
    verify: dict[str, Any]
    completeness: dict[str, Any]
    ledger_settled: bool
    faults: Faults
    asked: Faults  # the faults asked for (kills counted under "any")
    reviews_decided: int
    unanswered: int
    wall_s: float
    publish_s: float
    decided_s: float  # from the first submission to the last task's decision
    extra: list[tuple[str, bool, str]] = field(default_factory=list)  # scenario's own checks
    resubmitted_before: set[str] = field(default_factory=set)  # by earlier runs on the stack
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.unique - len(self.decisions.events)

    def checks(self) -> list[tuple[str, bool, str]]:
        c = self.completeness
        gaps = {**c.get("missing_stages", {}), **c.get("events_without_task", {})}
        twice = c.get("decided_more_than_once", {})
        again = self.resubmitted | self.resubmitted_before
        stray = [e for e in c.get("event_conflicts", []) if e["task_id"] not in again]
        conflicting = self.decisions.conflicting()
        kills = sum(self.faults.kills.values())
        asked_kills = sum(self.asked.kills.values())
        return [
            ("every task decided", self.missing == 0, f"{self.missing} missing"),
            ("exactly one decision a task", not conflicting, _named(conflicting)),
            ("nothing dead-lettered", not self.dead_letters, f"{len(self.dead_letters)} letters"),
            (
                "the ledger verifies",
                bool(self.verify.get("ok")),
                str(self.verify.get("reason") or ""),
            ),
            ("the ledger stopped growing", self.ledger_settled, ""),
            ("ledger: no gap", not gaps, _named(sorted(gaps))),
            ("ledger: no task decided more than once", not twice, _named(sorted(twice))),
            (
                "ledger: every decided task recorded",
                c.get("decided_tasks") == self.decisions.tasks,
                f"{c.get('decided_tasks')} in the ledger, {self.decisions.tasks} on the topic",
            ),
            (
                "ledger: events conflict only for resubmitted ids",
                not stray,
                _named(sorted({e["task_id"] for e in stray})),
            ),
            ("kills done", kills >= asked_kills, f"{kills} of {asked_kills}"),
            (
                "broker restarts done",
                self.faults.broker_restarts >= self.asked.broker_restarts,
                f"{self.faults.broker_restarts} of {self.asked.broker_restarts}",
            ),
            (
                "PostgreSQL restarts done",
                self.faults.postgres_restarts >= self.asked.postgres_restarts,
                f"{self.faults.postgres_restarts} of {self.asked.postgres_restarts}",
            ),
            (
                "the stack recovered from every fault",
                not self.faults.not_recovered,
                "; ".join(self.faults.not_recovered),
            ),
            *self.extra,
        ]

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks())

    def print(self, console: Console) -> None:
        d = self.decisions
        f = self.faults
        table = Table(title=f"chaos report: {self.scenario}", show_header=False)
        rows = [
            (
                "submissions published",
                f"{self.submissions} ({len(self.resubmitted)} ids resubmitted)",
            ),
            ("unique task ids submitted", f"{self.unique} ({self.critical} critical)"),
            ("decided", str(len(d.events))),
            (
                "  by the model / people / the policy's fallback",
                f"{d.decided_by['model']} / {d.decided_by['human']} / {d.decided_by['policy']}",
            ),
            ("missing", str(self.missing)),
            ("conflicting (several decision events or outcomes)", str(len(d.conflicting()))),
            ("duplicate records (same event again; sinks dedupe)", str(d.duplicates)),
            ("dead letters on the topic", str(len(self.dead_letters))),
            ("ledger verification", _verified(self.verify)),
            ("ledger completeness", _complete(self.completeness)),
            (
                "services killed (SIGKILL) and restarted",
                _counted(f.kills),
            ),
            ("broker killed (SIGKILL) and restarted", str(f.broker_restarts)),
            ("PostgreSQL stopped at once and restarted", str(f.postgres_restarts)),
            ("restarted after failing /healthz or exiting", _counted(f.supervised)),
            ("recovery after a fault, median / max", _spread(f.recoveries)),
            ("time to decision p50 / p99 / max", _quantiles(d.latencies)),
            ("reviews decided by people (approvals included)", str(self.reviews_decided)),
            ("review API calls unanswered (down, restarting)", str(self.unanswered)),
            (
                "publishing rate",
                f"{self.submissions / max(self.publish_s, 1e-9):.1f} tasks/s"
                f" over {self.publish_s:.0f} s",
            ),
            (
                "decision rate",
                f"{len(d.events) / max(self.decided_s, 1e-9):.1f} tasks/s"
                f" (all decided {self.decided_s:.0f} s after the first submission)",
            ),
            ("wall time", f"{self.wall_s:.0f} s"),
        ]
        for label, value in rows:
            table.add_row(label, value)
        for name, passed, detail in self.checks():
            mark = "[green]PASS[/green]" if passed else "[red]FAIL[/red]"
            table.add_row(f"{mark} {name}", "" if passed else detail)
        console.print(table)
        for letter in self.dead_letters[:SHOWN]:
            console.print(f"dead letter: {letter}")
        for note in self.notes:
            console.print(note)
        console.print(f"repeat: {self.command}")


def _verified(v: Mapping[str, Any]) -> str:
    if not v.get("ok"):
        return f"FAILED: {dict(v)}"
    return f"ok: {v.get('entries')} entries, {v.get('checkpoints_checked')} signed checkpoints"


def _complete(c: Mapping[str, Any]) -> str:
    return (
        f"{c.get('decided_tasks')} decided tasks; {len(c.get('missing_stages', {}))} with a gap,"
        f" {len(c.get('events_without_task', {}))} without a submission,"
        f" {len(c.get('decided_more_than_once', {}))} decided more than once;"
        f" {len(c.get('event_conflicts', []))} event conflicts (resubmissions with other content)"
    )


def _counted(by_name: Counter[str]) -> str:
    """ "3 (router 2, scoring 1)", or "0"."""
    each = ", ".join(f"{n} {c}" for n, c in sorted(by_name.items()))
    return f"{sum(by_name.values())} ({each})" if each else "0"


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return f"{len(items)}: {shown}{'…' if len(items) > SHOWN else ''}" if items else ""


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    at = [ordered[min(int(q * len(ordered)), len(ordered) - 1)] for q in (0.5, 0.99)]
    return f"{at[0]:.1f} s / {at[1]:.1f} s / {ordered[-1]:.1f} s"


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[len(ordered) // 2]:.1f} s / {ordered[-1]:.1f} s"
