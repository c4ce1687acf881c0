"""`tandem policy`: validate, simulate, apply and roll back routing policies; the kill switch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from tandem_policy.budget_cost import BudgetCurve, BudgetPoint
from tandem_policy.lifecycle import Governance
from tandem_policy.loader import PolicyError, load_policy
from tandem_policy.policy import policy_json_schema
from tandem_policy.whatif import Accuracy, Placement, Side, WhatIf
from tandem_shared.schemas import write_schema

from tandem_cli.calibrate import cases_from
from tandem_cli.control import control_publisher, keys, who
from tandem_cli.window import when

policy_app = typer.Typer(
    help="Routing policies: validate, simulate, apply, roll back; the kill switch.",
    no_args_is_help=True,
)
_out = Console()
T = TypeVar("T")
SCHEMA_PATH = Path("docs/schemas/policy.json")


def _run(action: Callable[[Governance], Awaitable[T]]) -> T:
    """Run one action against the pipeline; a refusal ends the command with its reason."""

    async def main() -> T:
        async with control_publisher() as (kafka, topics, publisher):
            return await action(Governance(kafka.bootstrap_servers, topics, publisher, keys()))

    try:
        return asyncio.run(main())
    except (PolicyError, ValueError) as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from exc


def _read(path: Path) -> str:
    try:
        load_policy(path)  # refuse early, naming the file
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    return path.read_text(encoding="utf-8")


@policy_app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Policy documents.")]) -> None:
    """Check documents against the policy schema; each problem with its line."""
    failed = False
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            typer.echo(str(exc), err=True)
            failed = True
            continue
        types = ", ".join(sorted(policy.task_types)) or "none"
        typer.echo(f"{path}: valid ({policy.name} v{policy.version}; task types: {types})")
    if failed:
        raise typer.Exit(1)


@policy_app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Where to write it.")] = SCHEMA_PATH,
) -> None:
    """Write the policy document's JSON Schema (published as docs/schemas/policy.json)."""
    typer.echo(f"wrote {write_schema(policy_json_schema(), out)}")


@policy_app.command()
def simulate(
    file: Annotated[Path, typer.Argument(help="The proposed policy.")],
    since: Annotated[str, typer.Option(help="Window start: 24h, 7d, or an ISO time.")] = "24h",
    until: Annotated[str, typer.Option(help="Window end: now or an ISO time.")] = "now",
    reviews_per_hour: Annotated[
        float, typer.Option(help="Review capacity assumed for the SLA estimate.")
    ] = 30.0,
    against: Annotated[
        Path | None, typer.Option(help="Compare with this document instead of the active policy.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    changes: Annotated[int, typer.Option(help="Changed tasks to list.")] = 20,
    models_dir: Annotated[
        Path, typer.Option(help="The model registry: holdout rows for the budget curves.")
    ] = Path("models"),
    labels: Annotated[
        Path | None,
        typer.Option(help="People's labels (tandem feedback export): QA verdicts for the curves."),
    ] = None,
) -> None:
    """Replay a window of scored events under FILE beside the active policy; for a task type
    with an error budget, what each budget would cost."""
    document = _read(file)
    base = load_policy(against) if against is not None else None
    start, end = when(since), when(until)
    try:
        cases_for = cases_from(models_dir, labels)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    report = _run(lambda g: g.simulate(document, start, end, reviews_per_hour, base, cases_for))
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _out.print(*render(report, changes=changes))


@policy_app.command()
def apply(file: Annotated[Path, typer.Argument(help="The policy to activate.")]) -> None:
    """Activate FILE on every router replica, live; the one it replaces is kept for rollback."""
    document = _read(file)
    state = _run(lambda g: g.apply(document, who()))
    before = f" (rollback to v{state.previous.version})" if state.previous else ""
    typer.echo(f"active: {state.active.name} v{state.active.version}{before}")


@policy_app.command()
def rollback() -> None:
    """Return to the policy active before the last change."""
    state = _run(lambda g: g.rollback(who()))
    assert state.previous is not None
    typer.echo(
        f"active: {state.active.name} v{state.active.version} "
        f"(rolled back from v{state.previous.version})"
    )


@policy_app.command()
def history() -> None:
    """Every policy change the control topic holds: version, action, who, when."""
    changes = _run(lambda g: g.history())
    table = Table(title="policy history")
    for column in ("when", "policy", "action", "by"):
        table.add_column(column)
    for c in changes:
        table.add_row(c.changed_at.isoformat(), f"{c.name} v{c.version}", c.action, c.changed_by)
    _out.print(table)


@policy_app.command("kill-switch")
def kill_switch(
    state: Annotated[str, typer.Argument(help="on (tasks go to people) or off.")],
    task_type: Annotated[
        str | None, typer.Option(help="Only this task type; everything when left out.")
    ] = None,
) -> None:
    """Switch automation off (on) or back on (off), within a second on every router."""
    if state not in ("on", "off"):
        raise typer.BadParameter("say on or off")
    result = _run(lambda g: g.kill_switch(state == "on", task_type, who()))
    if result.all:
        typer.echo("kill switch ON: every task goes to people")
    elif result.task_types:
        typer.echo(f"kill switch ON for: {', '.join(sorted(result.task_types))}")
    else:
        typer.echo("kill switch off: automation follows the policy")


# ---- the what-if report ----------------------------------------------------------------------


def render(report: WhatIf, *, changes: int = 20) -> list[Table]:
    """For the CLI: the two sides with the difference, then the first ``changes`` changed tasks."""
    sides = Table(
        title=f"What if {_name(report.proposed)} replaced {_name(report.active)}",
        caption=f"{report.active.tasks} tasks over {report.hours} h; "
        f"review capacity {report.reviews_per_hour:g}/h",
    )
    for header in ("", "active", "proposed", "difference"):
        sides.add_column(header, justify="right" if header else "left")
    for row in _side_rows(report.active, report.proposed):
        sides.add_row(*row)
    changed = Table(
        title="Changed routes",
        caption=f"{min(changes, len(report.changed))} of {report.changed_total} shown",
    )
    for header in ("task", "type", "active", "proposed"):
        changed.add_column(header)
    for change in report.changed[:changes]:
        changed.add_row(
            change.task_id,
            change.task_type,
            _placed(change.active),
            _placed(change.proposed),
        )
    return [sides, changed, *map(budget_table, report.budgets)]


def budget_table(curve: BudgetCurve) -> Table:
    """What each error budget would cost the task type: the proposed one marked."""
    within = f", in each {curve.per_segment} together" if curve.per_segment else ""
    table = Table(
        title=f"{curve.task_type}: automation against the error budget, promised at "
        f"{curve.confidence:.0%}{within}",
        caption=f"thresholds calibrated on {curve.cases:,} labelled cases of "
        f"{curve.model.name}/{curve.model.version}; the window routed at each",
    )
    header = f"threshold per {curve.per_segment}" if curve.per_segment else "threshold"
    for column in ("at most wrong", header, "automation", "review items per hour"):
        table.add_column(column, justify="right")
    for point in curve.points:
        budget = f"{point.max_error:.1%}" + (
            " (proposed)" if point.max_error == curve.max_error else ""
        )
        if point.automation_rate is None:
            table.add_row(budget, "cannot promise", "–", "–")
            continue
        table.add_row(
            budget,
            _thresholds(point),
            f"{point.automation_rate:.1%}",
            f"{point.review_items_per_hour or 0:.2f}",
        )
    return table


def _thresholds(point: BudgetPoint) -> str:
    if not point.segments:
        return f"{point.threshold or 0:.3f}"
    return ", ".join(
        f"{value} {'to people' if t is None else f'{t:.3f}'}" for value, t in point.segments.items()
    )


def _side_rows(a: Side, b: Side) -> list[tuple[str, str, str, str]]:
    load_a, load_b = a.review_load, b.review_load
    return [
        ("policy", _name(a), _name(b), ""),
        ("tasks", *_numbers(a.tasks, b.tasks)),
        ("automatic", *_rated(a.automatic, a.automation_rate, b.automatic, b.automation_rate)),
        ("QA samples", *_numbers(a.qa_samples, b.qa_samples)),
        ("reviews", *_numbers(a.reviews, b.reviews)),
        ("escalations", *_numbers(a.escalations, b.escalations)),
        ("accuracy of automatic", *_accuracies(a.accuracy, b.accuracy)),
        ("review items per hour", *_numbers(load_a.mean_per_hour, load_b.mean_per_hour, 2)),
        ("busiest hour", *_numbers(load_a.peak_per_hour, load_b.peak_per_hour)),
        ("late reviews", *_rated(a.sla.late, a.sla.late_share, b.sla.late, b.sla.late_share)),
    ]


def _name(side: Side) -> str:
    return f"{side.policy.name} v{side.policy.version}"


def _placed(placement: Placement) -> str:
    return f"{placement.route}: {', '.join(placement.reasons)}"


def _rated(a: int, a_rate: float, b: int, b_rate: float) -> tuple[str, str, str]:
    points = _signed(100 * (b_rate - a_rate), 1)
    delta = _signed(b - a) if points == "=" else f"{_signed(b - a)} ({points} pts)"
    return f"{a} ({a_rate:.1%})", f"{b} ({b_rate:.1%})", delta


def _numbers(a: float, b: float, digits: int = 0) -> tuple[str, str, str]:
    return f"{a:.{digits}f}", f"{b:.{digits}f}", _signed(b - a, digits)


def _accuracies(a: Accuracy, b: Accuracy) -> tuple[str, str, str]:
    if a.accuracy is None or b.accuracy is None:
        return _accurate(a), _accurate(b), ""
    points = _signed(100 * (b.accuracy - a.accuracy), 1)
    return _accurate(a), _accurate(b), points if points == "=" else f"{points} pts"


def _accurate(accuracy: Accuracy) -> str:
    if accuracy.accuracy is None:
        return "n/a"
    return f"{accuracy.accuracy:.1%} of {accuracy.labelled}"


def _signed(value: float, digits: int = 0) -> str:
    shown = f"{value:+.{digits}f}"
    return "=" if float(shown) == 0 else shown
