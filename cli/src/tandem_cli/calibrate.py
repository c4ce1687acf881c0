"""`tandem policy calibrate`: a task type's error budget turned into the confidence threshold
that keeps it (tandem_policy.budget), written into the next version of the policy with the
evidence beside it; and what other budgets would cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from tandem_policy.budget import (
    Calibration,
    Case,
    TooFewLabels,
    automation_curve,
    by_segment,
    calibrate,
    calibrate_segments,
    fewest_cases,
    segment_confidence,
)
from tandem_policy.budget_cost import CURVE, CasesFor, evidence
from tandem_policy.loader import PolicyError, dump_policy, load_policy
from tandem_policy.policy import NO_SEGMENT, Calibrated, ErrorBudget, Policy, TaskTypePolicy
from tandem_scoring.registry import load_model
from tandem_shared.events import ModelRef, TaskSubmitted

from tandem_cli.feedback import SEGMENT_COLUMN, read_rows
from tandem_cli.improvement import ImprovementError, Row, load_recipe, score

_out = Console(width=120)


def reference_cases(models_dir: Path, model: str, version: str) -> list[Case]:
    """The model's holdout rows (its recipe's ``holdout()``, never trained on), scored by the
    version: each case its confidence and whether its prediction was the data set's label."""
    recipe = load_recipe(models_dir, model)
    if not hasattr(recipe, "holdout"):
        raise ImprovementError(f"the recipe of {model} names no holdout() rows to calibrate on")
    loaded = load_model(models_dir / model / version)
    names = [f.name for f in loaded.manifest.ordered_features]
    split = recipe.holdout()
    tasks = [
        TaskSubmitted(
            task_id=f"holdout-{i}",
            task_type=loaded.manifest.task_types[0],
            features=dict(zip(names, map(float, row), strict=True)),
        )
        for i, row in enumerate(split.features)
    ]
    return [
        Case(r.confidence, r.prediction == str(label))
        for r, label in zip(score(loaded, tasks), split.labels, strict=True)
    ]


def cases_from(models_dir: Path, labels: Path | None) -> CasesFor:
    """The labelled cases of the what-if's budget curves, as calibration takes them: the
    version's holdout rows (none when the registry here does not hold it) and QA verdicts."""
    rows = read_rows(labels) if labels else []

    def cases_for(task_type: str, model: ModelRef, attribute: str | None) -> list[Case]:
        verdicts = qa_cases(rows, task_type, model.name, model.version, attribute)
        if attribute is not None:  # only people's verdicts know their segment
            return verdicts
        try:
            held = reference_cases(models_dir, model.name, model.version)
        except (ImprovementError, OSError, ValueError):
            held = []
        return [*held, *verdicts]

    return cases_for


def qa_cases(
    rows: Sequence[Row], task_type: str, model: str, version: str, attribute: str | None = None
) -> list[Case]:
    """People's verdicts on QA samples of the version (``tandem feedback export``): automatic
    decisions drawn at random, so an unbiased look at the decisions the budget is about. Each
    carries its task's value of the segment ``attribute``, when one is given."""
    return [
        _case(r, attribute)
        for r in rows
        if r.get("qa_sample") is True
        and r.get("task_type") == task_type
        and str(r.get("model_name")) == model
        and str(r.get("model_version")) == version
    ]


def _case(row: Row, attribute: str | None) -> Case:
    if attribute is None:
        return Case(float(row["confidence"]), bool(row["agreed"]))
    value = row.get(f"{SEGMENT_COLUMN}{attribute}") or NO_SEGMENT
    return Case(float(row["confidence"]), bool(row["agreed"]), str(value))


def calibrated_policy(
    policy: Policy, task_type: str, budget: ErrorBudget, found: Calibration, data: str
) -> Policy:
    """The next version: the task type's automatic outcomes at the threshold, the budget with
    its evidence."""
    rules = policy.task_types[task_type]
    return _next_version(
        policy,
        task_type,
        rules.model_copy(
            update={
                "auto": dict.fromkeys(rules.auto, found.threshold),
                "error_budget": budget.model_copy(
                    update={"calibrated": evidence(found, data, _now())}
                ),
            }
        ),
    )


def segmented_policy(
    policy: Policy, task_type: str, budget: ErrorBudget, found: Mapping[str, Calibrated]
) -> Policy:
    """The next version: the budget kept per segment, with each promised value's threshold
    and evidence (the others' tasks go to people)."""
    rules = policy.task_types[task_type]
    kept = budget.model_copy(update={"segments": dict(found)})
    return _next_version(policy, task_type, rules.model_copy(update={"error_budget": kept}))


def _next_version(policy: Policy, task_type: str, rules: TaskTypePolicy) -> Policy:
    data = policy.model_dump()
    data["version"] = policy.version + 1
    data["task_types"][task_type] = rules.model_dump()
    return Policy.model_validate(data)


def curve_table(curve: Sequence[tuple[float, Calibration | None]], confidence: float) -> Table:
    table = Table(title=f"What each budget costs, promised at {confidence:.0%}")
    for column in ("at most wrong", "threshold", "automation", "to people per 1,000"):
        table.add_column(column, justify="right")
    for budget, found in curve:
        if found is None:
            table.add_row(f"{budget:.1%}", "cannot promise", "–", "–")
            continue
        table.add_row(
            f"{budget:.1%}",
            f"{found.threshold:.3f}",
            f"{found.automation_rate:.1%}",
            f"{1000 * (1 - found.automation_rate):,.0f}",
        )
    return table


def calibrate_command(
    file: Annotated[Path, typer.Argument(help="The policy to calibrate.")],
    task_type: Annotated[str, typer.Option(help="The task type whose budget to keep.")],
    model: Annotated[str, typer.Option(help="The model that scores it.")],
    version: Annotated[str, typer.Option(help="The model's live version.")] = "1",
    labels: Annotated[
        Path | None, typer.Option(help="People's labels (tandem feedback export): QA samples.")
    ] = None,
    max_error: Annotated[
        float | None, typer.Option(help="The budget [default: the policy's error_budget].")
    ] = None,
    confidence: Annotated[
        float | None, typer.Option(help="How sure to be of it [default: the policy's, or 0.95].")
    ] = None,
    models_dir: Annotated[Path, typer.Option(help="The model registry.")] = Path("models"),
    out: Annotated[Path | None, typer.Option(help="Write the next policy version here.")] = None,
    tasks_per_day: Annotated[
        int | None,
        typer.Option(min=1, help="The task type's traffic: suggests a QA sampling rate."),
    ] = None,
    per_segment: Annotated[
        str | None,
        typer.Option(
            help="Keep the budget within each value of this segment attribute, each with a "
            "threshold of its own [default: the policy's error_budget.per_segment]."
        ),
    ] = None,
) -> None:
    """Set the confidence threshold of TASK_TYPE's automatic decisions so that at most
    MAX_ERROR of them are wrong, promised at CONFIDENCE (Learn then Test on the model's holdout
    rows and the QA samples' verdicts); print what other budgets would cost; with --out, write
    the next policy version with the evidence. Refused when the labels are too few. Kept per
    segment, each value of the attribute gets a threshold from its own QA verdicts."""
    try:
        policy = load_policy(file)
    except PolicyError as exc:
        raise typer.BadParameter(str(exc)) from exc
    rules = policy.task_types.get(task_type)
    if rules is None:
        raise typer.BadParameter(f"{file} has no task type {task_type!r}")
    budget = _budget(rules.error_budget, max_error, confidence, per_segment)
    if budget.per_segment is not None:
        if budget.per_segment not in policy.segments:
            raise typer.BadParameter(
                f"{budget.per_segment!r} is not one of the policy's segments {policy.segments}"
            )
        calibrate_per_segment(policy, task_type, budget, model, version, labels, out, tasks_per_day)
        return
    try:
        cases = reference_cases(models_dir, model, version)
        qa = qa_cases(read_rows(labels), task_type, model, version) if labels else []
    except (ImprovementError, OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    data = f"{len(cases)} holdout rows of {model}/{version}, {len(qa)} QA verdicts"
    _out.print(
        curve_table(automation_curve([*cases, *qa], CURVE, budget.confidence), budget.confidence)
    )
    try:
        found = calibrate([*cases, *qa], budget.max_error, budget.confidence)
    except TooFewLabels as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"{task_type}: threshold {found.threshold:.3f} keeps automatic errors at most "
        f"{budget.max_error:g} with {budget.confidence:.0%} confidence ({found.errors} wrong of "
        f"{found.automated} automated of {found.cases}; bound {found.upper_bound:.4f}); "
        f"expected automation {found.automation_rate:.1%}; from {data}"
    )
    if tasks_per_day is not None:
        typer.echo(qa_advice(budget, found, tasks_per_day))
    if out is not None:
        _write(out, calibrated_policy(policy, task_type, budget, found, data))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _write(out: Path, next_version: Policy) -> None:
    out.write_text(dump_policy(next_version), encoding="utf-8")
    typer.echo(f"wrote {out}: {next_version.name} v{next_version.version}")


def qa_advice(budget: ErrorBudget, found: Calibration, tasks_per_day: int, days: int = 30) -> str:
    """The QA sampling rate at which the live watch's window (``days``) sees enough samples to
    show the budget kept, at the expected automation."""
    need = fewest_cases(budget.max_error, budget.confidence)
    automatic = tasks_per_day * days * found.automation_rate
    rate = _qa_rate(need, automatic)
    return (
        f"QA: the live watch needs {need} QA samples without an error in its {days}-day window "
        f"to show the budget kept; at {tasks_per_day:,} tasks a day ({automatic:,.0f} automatic "
        f"in {days} days) set qa_sample_rate to {rate:.3f} or more"
    )


def segment_qa_advice(
    budget: ErrorBudget,
    results: Mapping[str, Calibration | TooFewLabels],
    grouped: Mapping[str, Sequence[Case]],
    tasks_per_day: int,
    days: int = 30,
) -> str:
    """The QA sampling rate at which every promised value's own watch sees enough samples,
    the task type's traffic taken to split among the values as the QA verdicts do."""
    need = fewest_cases(budget.max_error, budget.confidence)
    total = sum(map(len, grouped.values()))
    rates = {
        value: _qa_rate(
            need, tasks_per_day * days * len(grouped[value]) / total * found.automation_rate
        )
        for value, found in results.items()
        if isinstance(found, Calibration)
    }
    value = max(rates, key=rates.__getitem__)
    return (
        f"QA: each {budget.per_segment}'s live watch needs {need} QA samples without an error "
        f"in its {days}-day window; at {tasks_per_day:,} tasks a day, shared as the verdicts "
        f"are, {budget.per_segment}={value} needs the most: set qa_sample_rate to "
        f"{rates[value]:.3f} or more"
    )


def _qa_rate(need: int, automatic: float) -> float:
    return min(1.0, need / automatic) if automatic else 1.0


def calibrate_per_segment(
    policy: Policy,
    task_type: str,
    budget: ErrorBudget,
    model: str,
    version: str,
    labels: Path | None,
    out: Path | None,
    tasks_per_day: int | None,
) -> None:
    """A threshold per value of the budget's segment attribute, from the QA verdicts of each
    (the holdout rows carry no segment); all promised together at the budget's confidence."""
    attribute = budget.per_segment or ""
    if labels is None:
        raise typer.BadParameter(
            "a budget kept per segment is calibrated on people's QA verdicts (--labels): "
            "the model's holdout rows belong to no segment"
        )
    try:
        grouped = by_segment(qa_cases(read_rows(labels), task_type, model, version, attribute))
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not grouped:
        typer.echo(f"refused: {labels} holds no QA verdicts of {model}/{version}", err=True)
        raise typer.Exit(1)
    results = calibrate_segments(grouped, budget.max_error, budget.confidence)
    each = segment_confidence(budget.confidence, len(grouped))
    _out.print(segment_table(results, grouped, attribute, each))
    promised = {
        value: evidence(found, f"{len(grouped[value])} QA verdicts of {model}/{version}", _now())
        for value, found in results.items()
        if isinstance(found, Calibration)
    }
    for value, found in results.items():
        if isinstance(found, TooFewLabels):
            typer.echo(f"{attribute}={value}: people decide its tasks; {found}")
    if not promised:
        typer.echo(f"refused: no value of {attribute} can be promised", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"{task_type}: at most {budget.max_error:g} wrong in each of {len(promised)} of "
        f"{len(results)} values of {attribute}, all together with {budget.confidence:.0%} "
        f"confidence (each at {each:.2%})"
    )
    if tasks_per_day is not None:
        typer.echo(segment_qa_advice(budget, results, grouped, tasks_per_day))
    if out is not None:
        _write(out, segmented_policy(policy, task_type, budget, promised))


def segment_table(
    results: Mapping[str, Calibration | TooFewLabels],
    grouped: Mapping[str, Sequence[Case]],
    attribute: str,
    each: float,
) -> Table:
    table = Table(title=f"Each {attribute}'s threshold, promised at {each:.2%}")
    for column in (attribute, "QA verdicts", "threshold", "automation", "errors", "bound"):
        table.add_column(column, justify="right")
    for value, found in results.items():
        if isinstance(found, TooFewLabels):
            table.add_row(value, f"{len(grouped[value]):,}", "cannot promise", "–", "–", "–")
            continue
        table.add_row(
            value,
            f"{len(grouped[value]):,}",
            f"{found.threshold:.3f}",
            f"{found.automation_rate:.1%}",
            f"{found.errors} of {found.automated}",
            f"{found.upper_bound:.4f}",
        )
    return table


def _budget(
    given: ErrorBudget | None,
    max_error: float | None,
    confidence: float | None,
    per_segment: str | None,
) -> ErrorBudget:
    if given is None and max_error is None:
        raise typer.BadParameter("the task type has no error_budget: give --max-error")
    changes = {
        k: v
        for k, v in (
            ("max_error", max_error),
            ("confidence", confidence),
            ("per_segment", per_segment),
        )
        if v is not None
    }
    base = given.model_dump() if given else {}
    return ErrorBudget.model_validate({**base, **changes, "calibrated": None, "segments": {}})
