"""The chaos harness's pure parts: the workload it draws, how it spreads its faults, and the
checks its report makes (the runs themselves: tests/e2e/test_chaos.py)."""

from __future__ import annotations

from typing import Any

from tandem_cli.chaos_faults import interleave
from tandem_cli.chaos_report import Decisions, Faults, Report
from tandem_cli.chaos_workload import draw


def test_about_one_submission_in_a_hundred_reuses_an_earlier_task_id() -> None:
    work = draw(5000, seed=3, prefix="t")
    ids = [t.task_id for t in work.submissions]
    again = len(ids) - len(set(ids))
    assert 25 <= again <= 80
    assert set(work.truth) == set(ids)
    assert work.resubmitted <= set(work.truth)
    first = {}
    for t in work.submissions:
        first.setdefault(t.task_id, t)
    changed = [t for t in work.submissions if t is not first[t.task_id]]
    assert any(t.features != first[t.task_id].features for t in changed)  # other features
    assert 50 < work.critical < 300
    assert draw(5000, seed=3, prefix="t").submissions == work.submissions  # a seed repeats


def test_broker_restarts_are_spread_among_the_kills() -> None:
    events = interleave(20, 3)
    assert events.count("kill") == 20
    assert [n for n, e in enumerate(events) if e == "broker"] == [5, 11, 17]
    assert interleave(8, 0) == ["kill"] * 8
    assert interleave(0, 2) == ["broker", "broker"]


def report(**overrides: Any) -> Report:
    decisions = Decisions(records=2, tasks=2)
    decisions.events = {"a": {("router", "1", "x")}, "b": {("review-api", "2", "y")}}
    decisions.outcomes = {"a": {"benign"}, "b": {"malignant"}}
    asked = Faults(broker_restarts=1)
    asked.kills["any"] = 2
    done = Faults(broker_restarts=1)
    done.kills["router"] = 2
    values: dict[str, Any] = {
        "scenario": "kills",
        "command": "uv run --frozen tandem chaos",
        "submissions": 3,
        "unique": 2,
        "resubmitted": {"a"},
        "critical": 0,
        "decisions": decisions,
        "dead_letters": [],
        "verify": {"ok": True, "entries": 9, "checkpoints_checked": 1},
        "completeness": {
            "decided_tasks": 2,
            "missing_stages": {},
            "events_without_task": {},
            "decided_more_than_once": {},
            "event_conflicts": [{"task_id": "a"}],
        },
        "ledger_settled": True,
        "faults": done,
        "asked": asked,
        "reviews_decided": 1,
        "unanswered": 0,
        "wall_s": 10.0,
        "publish_s": 1.0,
        "decided_s": 5.0,
    }
    return Report(**{**values, **overrides})


def failed(r: Report) -> list[str]:
    return [name for name, passed, _ in r.checks() if not passed]


def test_a_clean_run_passes_every_check() -> None:
    assert failed(report()) == []
    assert report().ok


def test_a_second_decision_a_missing_task_or_a_dead_letter_fails_the_run() -> None:
    twice = report()
    twice.decisions.events["b"].add(("router", "2", "z"))
    twice.decisions.records += 1
    assert failed(twice) == ["exactly one decision a task"]
    assert failed(report(unique=3)) == ["every task decided"]
    assert failed(report(dead_letters=["scoring: …"])) == ["nothing dead-lettered"]


def test_a_record_seen_twice_is_a_duplicate_not_a_conflict() -> None:
    again = report()
    again.decisions.records += 1  # the same (source, id, content) once more
    assert again.decisions.duplicates == 1
    assert failed(again) == []


def test_the_ledger_must_verify_and_hold_every_decision_without_strays() -> None:
    assert failed(report(verify={"ok": False, "reason": "bad hash"})) == ["the ledger verifies"]
    short = report()
    short.completeness["decided_tasks"] = 1
    assert failed(short) == ["ledger: every decided task recorded"]
    stray = report()
    stray.completeness["event_conflicts"] = [{"task_id": "b"}]
    assert failed(stray) == ["ledger: events conflict only for resubmitted ids"]
    stray.resubmitted_before = {"b"}  # resubmitted by an earlier run on the stack
    assert failed(stray) == []


def test_fewer_faults_than_asked_fail_the_run() -> None:
    few = Faults(broker_restarts=1)
    few.kills["router"] = 1
    assert failed(report(faults=few)) == ["kills done"]
