"""`tandem model`: check a model folder before it is served, promote or roll back a version live,
and publish the manifest schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
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
    rolled_back,
    shadowed,
)
from tandem_shared.schemas import write_schema

from tandem_cli.control import control_publisher, who

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
    name: str, decide: Callable[[ModelState | None], ModelState], who: str
) -> ModelState:
    async with control_publisher() as (kafka, topics, publisher):
        state = decide(model_state(await read_control(kafka.bootstrap_servers, topics), name))
        await publish_change(publisher, topics, model_change(name, state, who))
    return state


@model_app.command()
def promote(
    name: Annotated[str, typer.Argument(help="The model, e.g. tumor_screening.")],
    version: Annotated[str, typer.Argument(help="The version to score with from now on.")],
    models_dir: Annotated[
        Path | None, typer.Option(help="Check the version here first (the registry folder).")
    ] = None,
) -> None:
    """Make VERSION of NAME score live on every scoring replica, without a restart."""
    if models_dir is not None:
        try:
            typer.echo(check_model(models_dir / name / version))
        except ModelError as exc:
            _stderr.print(f"refused: {exc}", markup=False)
            raise typer.Exit(1) from exc
    state = asyncio.run(_change(name, lambda current: promoted(current, version), who()))
    typer.echo(
        f"{name}: live {state.live}" + (f", rollback to {state.previous}" if state.previous else "")
    )


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
