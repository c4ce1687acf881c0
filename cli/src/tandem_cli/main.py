"""The `tandem` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from tandem_shared.auth import ROLES, mint_token
from tandem_shared.settings import KafkaSettings, RuntimeSettings

from tandem_cli.calibrate import calibrate_command
from tandem_cli.deadletter import deadletter_app
from tandem_cli.feedback import feedback_app
from tandem_cli.metrics import metrics
from tandem_cli.model import model_app
from tandem_cli.policy import policy_app
from tandem_cli.publish import publish_tasks, read_json_lines, validate
from tandem_cli.report import report
from tandem_cli.risk import risk_app
from tandem_cli.secrets_file import secrets_command
from tandem_cli.stack.local import Entry

app = typer.Typer(help="Tandem: hybrid human–AI decision workflows on Kafka.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack: Kafka and the four services as processes.")
app.add_typer(stack_app, name="stack")
console = Console(stderr=True)


def _audit_app() -> typer.Typer:
    from tandem_cli.audit import audit_app

    return audit_app


app.add_typer(
    _audit_app(), name="audit", help="The audit ledger: verify, prove, export, check proofs."
)
app.add_typer(model_app, name="model")
# Registered here: calibration reads labels through the feedback module, which reads times
# the way the policy commands do.
policy_app.command("calibrate")(calibrate_command)
app.add_typer(policy_app, name="policy")
app.add_typer(risk_app, name="risk")
app.add_typer(feedback_app, name="feedback")
app.add_typer(deadletter_app, name="deadletter")
app.command()(report)
app.command("secrets")(secrets_command)
app.command()(metrics)


@app.command()
def token(
    role: Annotated[
        list[str], typer.Option(help=f"One of {', '.join(ROLES)}; repeat for several.")
    ],
    subject: Annotated[str, typer.Option(help="Who the token speaks for.")],
    hours: Annotated[float, typer.Option(help="Lifetime, at most 24.", min=0.01, max=24)] = 8.0,
    qualification: Annotated[
        list[str] | None,
        typer.Option(help="A review queue the person may take work from; repeat for several."),
    ] = None,
) -> None:
    """Mint a development JWT (HS256 with TANDEM_JWT_SECRET)."""
    from datetime import timedelta

    try:
        lifetime = timedelta(hours=hours)
        print(mint_token(RuntimeSettings(), subject, role, lifetime, qualification or []))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command("sample-tasks")
def sample_tasks(
    count: Annotated[int, typer.Option(min=1)] = 10,
    seed: Annotated[
        int | None, typer.Option(help="Repeat a draw; new tasks each time if unset.")
    ] = None,
) -> None:
    """Print valid tandem.task.submitted.v1 bodies drawn from the reference data set, one a line."""
    from tandem_cli.dataset import sample_tasks as draw

    for body, _truth in draw(count, _seed(seed)):
        print(json.dumps(body))


@app.command()
def submit(
    file: Annotated[
        Path | None, typer.Argument(help="JSON lines; '-' or nothing reads stdin.")
    ] = None,
    sample: Annotated[
        int | None, typer.Option(help="Generate N tasks from the reference data set.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="With --sample: repeat a draw.")] = None,
) -> None:
    """Publish tasks to tandem.tasks.submitted and wait until the broker has them all."""
    try:
        if sample is not None:
            from tandem_cli.dataset import sample_tasks as draw

            bodies = [body for body, _ in draw(sample, _seed(seed))]
        elif file is None or str(file) == "-":
            bodies = list(read_json_lines(sys.stdin))
        else:
            with file.open() as stream:
                bodies = list(read_json_lines(stream))
        tasks = validate(bodies)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    with Progress(console=console) as progress:
        asyncio.run(publish_tasks(KafkaSettings(), tasks, progress))
    console.print(f"published {len(tasks)} task(s)")


def _seed(seed: int | None) -> int:
    """Task ids come from the seed, and a task id submitted again is a no-op: without a seed,
    every draw gets fresh ids."""
    return seed if seed is not None else secrets.randbelow(10**9)


@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka and the four services, create the topics, wait until every one is ready."""
    from tandem_cli.stack import local

    try:
        entries = local.up(say=console.print)
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    _print_status([(e, "ready") for e in entries])
    console.print(
        "reviewer console: http://127.0.0.1:8000/console   ·   API docs: "
        "http://127.0.0.1:8000/docs   ·   mint a token: "
        "uv run tandem token --role reviewer --subject you   ·   stop: make down"
    )


@stack_app.command("down")
def stack_down() -> None:
    """Stop everything `stack up` started, by pid."""
    from tandem_cli.stack import local

    local.down(say=console.print)


@stack_app.command("status")
def stack_status() -> None:
    """List what runs, each service with its URL."""
    from tandem_cli.stack import local

    rows = local.status()
    if not rows:
        console.print("nothing is running (start it with: make up)")
        return
    _print_status(rows)


def _print_status(rows: list[tuple[Entry, str]]) -> None:
    table = Table("component", "state", "pid", "address", "log")
    for entry, state in rows:
        table.add_row(entry.name, state, str(entry.pid), entry.url, entry.log)
    Console().print(table)


@app.command()
def demo(
    tasks: Annotated[int, typer.Option(min=10)] = 3000,
    reviewers: Annotated[int, typer.Option(min=1)] = 4,
    seed: Annotated[int, typer.Option()] = 42,
) -> None:
    """Publish a realistic stream, let simulated reviewers work the queue, print the summary."""
    from tandem_cli.demo import run_demo

    sys.exit(asyncio.run(run_demo(tasks, reviewers, seed, console)))


@app.command()
def chaos(
    scenario: Annotated[
        str, typer.Option(help="kills, outage, or all (one after the other, on one stack).")
    ] = "kills",
    tasks: Annotated[int, typer.Option(min=10, help="Submissions, about 1% of them again.")] = 3000,
    rate: Annotated[float, typer.Option(min=1, help="Submissions a second.")] = 50.0,
    kills: Annotated[int, typer.Option(min=0, help="Services killed (SIGKILL) and restarted.")] = 8,
    broker_restarts: Annotated[int, typer.Option(min=0)] = 1,
    broker_down: Annotated[float, typer.Option(min=0, help="Seconds down per restart.")] = 5.0,
    outage_seconds: Annotated[float, typer.Option(min=1, help="The outage's broker down.")] = 30.0,
    outage_tasks: Annotated[int, typer.Option(min=1, help="Sent over HTTP meanwhile.")] = 200,
    reviewers: Annotated[int, typer.Option(min=2)] = 4,
    seed: Annotated[int, typer.Option(help="Tasks, kills and reviewers; repeat a run.")] = 42,
    wait: Annotated[float, typer.Option(min=10, help="Seconds to wait for decisions.")] = 300.0,
    keep: Annotated[bool, typer.Option(help="Keep logs and data even when it passes.")] = False,
) -> None:
    """Prove "exactly one decision per task, nothing lost" on a stack of its own while services,
    the broker and PostgreSQL fail; print the report, exit 1 when a check fails."""
    from tandem_cli.chaos import run
    from tandem_cli.chaos_plan import SCENARIOS, Plan

    # The harness's own clients ride out the broker restarts it causes: not worth a line each.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    chosen = next((s for s in SCENARIOS if s == scenario), None)
    if chosen is None:
        raise typer.BadParameter(f"one of {', '.join(SCENARIOS)}", param_hint="--scenario")
    plan = Plan(
        chosen,
        tasks=tasks,
        rate=rate,
        kills=kills,
        broker_restarts=broker_restarts,
        broker_down_s=broker_down,
        outage_s=outage_seconds,
        outage_tasks=outage_tasks,
        reviewers=reviewers,
        seed=seed,
        wait_s=wait,
    )
    reports = run(plan, console, keep=keep)
    sys.exit(0 if reports and all(r.ok for r in reports) else 1)


@app.command("demo-loop")
def demo_loop(
    tasks: Annotated[int, typer.Option(min=100, help="Tasks a round.")] = 1500,
    reviewers: Annotated[int, typer.Option(min=1)] = 4,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """One turn of the improvement loop on the running stack: people correct the model on a
    slice where it is weak, a retraining learns it, validation, shadow, promotion, the gain."""
    from tandem_cli.demo_loop import run_loop

    sys.exit(asyncio.run(run_loop(tasks, reviewers, seed, console)))


if __name__ == "__main__":
    app()
