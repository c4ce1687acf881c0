"""`tandem model`: check a model folder before it is served, promote or roll back a version live,
and publish the manifest schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from tandem_policy.lifecycle import active_policy
from tandem_policy.loader import load_policy
from tandem_policy.policy import Policy
from tandem_scoring.manifest import ModelManifest
from tandem_scoring.registry import (
    LoadedModel,
    ModelError,
    edge_rows,
    load_model,
    reference_rows,
    score_rows,
)
from tandem_shared.control import (
    ModelState,
    model_change,
    model_state,
    promoted,
    publish_change,
    read_control,
    registry_change,
    rolled_back,
    shadowed,
)
from tandem_shared.promotion import Evidence, Promotion, gate, refusals
from tandem_shared.schemas import write_schema
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tandem_cli import improvement
from tandem_cli.control import control_publisher, keys, who
from tandem_cli.feedback import feedback_rows, read_rows
from tandem_cli.window import when

model_app = typer.Typer(
    help="Models: check a folder, promote or roll back a version live, publish the schema.",
    no_args_is_help=True,
)
_stderr = Console(stderr=True)
SCHEMA_PATH = Path("docs/schemas/model-manifest.json")


def check_model(directory: Path) -> str:
    """Everything the scoring service checks when it loads the model, plus what drift and
    explanations need; return a one-line summary or raise ModelError with the reason."""
    model: LoadedModel = load_model(directory)
    manifest = model.manifest
    where = f"model {model.key}"
    if missing := manifest.missing_references:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ModelError(f"{where}: missing reference distributions: {shown}")
    rows = reference_rows(manifest)
    score_rows(manifest, model.session, rows, where)
    count = len(rows) + len(edge_rows(manifest))
    return (
        f"OK {model.key}: {len(manifest.features)} features ({manifest.width} input columns) -> "
        f"{len(manifest.labels)} labels {manifest.labels}, {count} reference rows scored, "
        f"explanation {manifest.explanation.method}, task types {manifest.task_types}"
    )


@model_app.command()
def check(
    path: Annotated[Path, typer.Argument(help="A model folder, models/NAME/VERSION.")],
) -> None:
    """Load a model with its manifest and score reference rows; exit 1 with the reason if they
    do not match."""
    try:
        summary = check_model(path)
    except ModelError as exc:
        _stderr.print(f"refused: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    print(summary)


def manifest_schema() -> dict[str, Any]:
    return ModelManifest.model_json_schema()


@model_app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Where to write it.")] = SCHEMA_PATH,
) -> None:
    """Write the manifest's JSON Schema (published as docs/schemas/model-manifest.json)."""
    print(f"wrote {write_schema(manifest_schema(), out)}")


async def _change(
    name: str,
    decide: Callable[[ModelState | None], ModelState],
    who: str,
    promotion: Promotion | None = None,
) -> ModelState:
    async with control_publisher() as (kafka, topics, publisher):
        signing = keys()
        changes = await read_control(kafka.bootstrap_servers, topics, signing.trust)
        state = decide(model_state(changes, name))
        if promotion is not None:  # the evidence first: the audit trail shows why, then what
            record = registry_change(name, promotion.version, promotion, who)
            await publish_change(publisher, topics, record, signing.signer)
        await publish_change(publisher, topics, model_change(name, state, who), signing.signer)
    return state


@model_app.command()
def promote(
    name: Annotated[str, typer.Argument(help="The model, e.g. tumor_screening.")],
    version: Annotated[str, typer.Argument(help="The version to score with from now on.")],
    evidence: Annotated[
        Path | None,
        typer.Option(help="The validation (JSON from `tandem model validate`) it goes live on."),
    ] = None,
    override: Annotated[
        str | None,
        typer.Option(help="Promote although the gate refuses, for this reason (audited)."),
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option(help="Check the version here first (the registry folder).")
    ] = None,
) -> None:
    """Make VERSION of NAME score live on every scoring replica, without a restart, on the
    evidence of a validation; the gate refuses a worse candidate unless overridden."""
    if models_dir is not None:
        try:
            typer.echo(check_model(models_dir / name / version))
        except ModelError as exc:
            _stderr.print(f"refused: {exc}", markup=False)
            raise typer.Exit(1) from exc
    try:
        found = Evidence.model_validate_json(evidence.read_text()) if evidence else None
        promotion = gate(version, found, override)
    except (OSError, ValueError) as exc:  # GateRefused and an unreadable report alike
        _stderr.print(f"refused: {exc}", markup=False)
        raise typer.Exit(1) from exc
    state = asyncio.run(_change(name, lambda current: promoted(current, version), who(), promotion))
    typer.echo(
        f"{name}: live {state.live}" + (f", rollback to {state.previous}" if state.previous else "")
    )
    if promotion.override_reason:
        typer.echo(f"gate overridden: {promotion.override_reason}")


@model_app.command()
def rollback(name: Annotated[str, typer.Argument(help="The model, e.g. tumor_screening.")]) -> None:
    """Return NAME to the version it had before the last promotion."""
    try:
        state = asyncio.run(_change(name, rolled_back, who()))
    except ValueError as exc:
        _stderr.print(f"{name}: {exc}", markup=False)
        raise typer.Exit(1) from exc
    typer.echo(f"{name}: live {state.live} (rolled back from {state.previous})")


@model_app.command()
def shadow(
    name: Annotated[str, typer.Argument(help="The model, e.g. tumor_screening.")],
    version: Annotated[str | None, typer.Argument(help="The candidate; leave out to stop.")] = None,
) -> None:
    """Score VERSION of NAME beside the live one: recorded on every scored event, never routed."""
    try:
        state = asyncio.run(_change(name, lambda current: shadowed(current, version), who()))
    except ValueError as exc:
        _stderr.print(f"{name}: {exc}", markup=False)
        raise typer.Exit(1) from exc
    typer.echo(f"{name}: live {state.live}, shadow {state.shadow or 'none'}")


def _training_rows(feedback: Path | None, since: str | None) -> tuple[list[dict[str, Any]], str]:
    """People's labels, from an exported training set or the feedback topic; and their source."""
    if feedback is not None:
        try:
            return read_rows(feedback), str(feedback)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc)) from exc
    kafka = KafkaSettings()
    return asyncio.run(feedback_rows(kafka, since)), Topics(kafka.topic_prefix).feedback


FeedbackFile = Annotated[
    Path | None,
    typer.Option(
        help="A training set from `tandem feedback export` [default: the feedback topic]."
    ),
]
Since = Annotated[str | None, typer.Option(help="Only labels since then: 30d, 24h or an ISO time.")]
ModelsDir = Annotated[Path, typer.Option(help="The model registry.")]


@model_app.command()
def retrain(
    model: Annotated[str, typer.Option(help="The model, e.g. tumor_screening.")],
    feedback: FeedbackFile = None,
    since: Since = None,
    until: Annotated[
        str | None, typer.Option(help="Learn from labels up to then; later ones validate.")
    ] = None,
    weight: Annotated[
        float, typer.Option(min=0.1, help="How many training rows one of people's labels counts.")
    ] = 3.0,
    models_dir: ModelsDir = Path("models"),
    publish: Annotated[bool, typer.Option(help="Record the version on the control topic.")] = True,
) -> None:
    """Train a candidate with the model's own recipe on its training data and people's labels,
    and add it to the registry as a new version. It is never promoted by this."""
    rows, source = _training_rows(feedback, since)
    serving = improvement.versions(models_dir, model)[-1:]  # what a restart would serve now
    try:
        manifest = improvement.retrain(
            models_dir, model, rows, source, weight, when(until) if until else None
        )
    except (improvement.ImprovementError, ModelError) as exc:
        _stderr.print(f"cannot retrain: {exc}", markup=False)
        raise typer.Exit(1) from exc
    window = manifest.feedback
    assert window is not None  # a retrained version always learnt from people's labels
    typer.echo(
        f"{model} version {manifest.version}: {manifest.metrics.train_rows} training rows, "
        f"{window.rows} of them labelled by people from {window.labelled_since:%Y-%m-%d %H:%M} "
        f"to {window.labelled_until:%Y-%m-%d %H:%M}; holdout accuracy "
        f"{manifest.metrics.holdout_accuracy:.4f}; data fingerprint {manifest.dataset.fingerprint}"
    )
    if publish:
        record = improvement.Registration.of(manifest)
        asyncio.run(
            _register(model, registry_change(model, manifest.version, record, who()), serving)
        )
    typer.echo(
        f"not promoted: validate it with tandem model validate --candidate {manifest.version}"
    )


async def _register(model: str, record: Any, serving: list[str]) -> None:
    """Record the new version; and, if no live version is recorded yet, the one serving now, so
    that a restart (which serves the newest by default) cannot put the candidate live."""
    async with control_publisher() as (kafka, topics, publisher):
        signing = keys()
        await publish_change(publisher, topics, record, signing.signer)
        changes = await read_control(kafka.bootstrap_servers, topics, signing.trust)
        if serving and model_state(changes, model) is None:
            pinned = ModelState(live=serving[0])
            await publish_change(
                publisher, topics, model_change(model, pinned, who()), signing.signer
            )


@model_app.command("validate")
def validate_candidate(
    model: Annotated[str, typer.Option(help="The model, e.g. tumor_screening.")],
    candidate: Annotated[str, typer.Option(help="The version to judge.")],
    live: Annotated[
        str | None, typer.Option(help="The version to judge it against [default: the live one].")
    ] = None,
    feedback: FeedbackFile = None,
    since: Since = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="The policy to measure automation under [default: the active one]."),
    ] = None,
    margin: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="How much worse a segment may be.")
    ] = 0.05,
    report: Annotated[
        Path, typer.Option(help="Where the report goes: FILE.md and FILE.json.")
    ] = Path("validation"),
    models_dir: ModelsDir = Path("models"),
) -> None:
    """Compare CANDIDATE with the live version on tasks people labelled after the candidate's
    training window: accuracy, calibration, automation under the policy, and by segment."""
    rows, _ = _training_rows(feedback, since)
    active, against = asyncio.run(_active(model, policy, live))
    try:
        evidence = improvement.validate(models_dir, model, candidate, against, rows, active, margin)
    except (improvement.ImprovementError, ModelError) as exc:
        _stderr.print(f"cannot validate: {exc}", markup=False)
        raise typer.Exit(1) from exc
    refused = refusals(evidence, candidate)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".md").write_text(improvement.markdown(evidence, refused))
    report.with_suffix(".json").write_text(improvement.evidence_json(evidence))
    live_s, cand_s = evidence.live_scores, evidence.candidate_scores
    typer.echo(
        f"{evidence.rows} held-out tasks: accuracy {live_s.accuracy:.1%} live {against}, "
        f"{cand_s.accuracy:.1%} candidate {candidate}; automation {live_s.automation_rate:.1%} "
        f"and {cand_s.automation_rate:.1%}"
    )
    for reason in refused:
        typer.echo(f"the gate would refuse: {reason}")
    if not refused:
        typer.echo(f"the gate would pass version {candidate}")
    typer.echo(f"wrote {report.with_suffix('.md')} and {report.with_suffix('.json')}")


async def _active(model: str, policy: Path | None, live: str | None) -> tuple[Policy, str]:
    """The policy to measure automation under and the version to judge against: as given, or
    as the control topic holds them (read only when one is missing)."""
    if policy is not None and live is not None:
        return load_policy(policy), live
    kafka = KafkaSettings()
    changes = await read_control(kafka.bootstrap_servers, Topics(kafka.topic_prefix), keys().trust)
    state = model_state(changes, model)
    against = live or (state.live if state else None)
    if against is None:
        raise typer.BadParameter("no live version is recorded: name one with --live")
    active = load_policy(policy) if policy is not None else active_policy(changes)
    if active is None:
        raise typer.BadParameter("no policy is active: name one with --policy")
    return active, against


@model_app.command()
def compare(
    model: Annotated[str, typer.Option(help="The model, e.g. tumor_screening.")],
    since: Annotated[
        str, typer.Option(help="Live traffic since then: 24h, 7d or an ISO time.")
    ] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Live against shadow on live traffic: how often they agree, how confidence shifts, and
    how accurate each was on the tasks people have labelled since."""
    kafka = KafkaSettings()
    start = when(since)
    found = asyncio.run(
        improvement.live_against_shadow(
            kafka.bootstrap_servers, Topics(kafka.topic_prefix), model, start
        )
    )
    if as_json:
        typer.echo(found.model_dump_json(indent=2))
        return
    if not found.tasks:
        typer.echo(f"no task of {model} was scored in shadow since {start:%Y-%m-%d %H:%M} UTC")
        raise typer.Exit(1)

    def share(value: float | None) -> str:
        return "–" if value is None else f"{value:.1%}"

    typer.echo(
        f"{model}: live {', '.join(found.live)} against shadow {', '.join(found.shadow)} on "
        f"{found.tasks} tasks since {start:%Y-%m-%d %H:%M} UTC\n"
        f"  agreement {share(found.agreement)}, confidence shift {found.confidence_shift:+.3f}\n"
        f"  labelled by people since: {found.labelled}; accuracy live "
        f"{share(found.live_accuracy)}, shadow {share(found.shadow_accuracy)}"
    )
