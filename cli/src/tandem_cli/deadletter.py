"""`tandem deadletter`: list and show the records the services could never process, and send the
chosen ones back to their origin topic once the cause is fixed (the work is in letters.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine, Sequence
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaError
from tandem_shared.settings import KafkaSettings

from tandem_cli.letters import SHORT_ID, Filters, Found, Refused, choose, read_letters, replay
from tandem_cli.window import when

deadletter_app = typer.Typer(
    help="Dead letters: list and show them, replay their originals to the origin topic.",
    no_args_is_help=True,
)
ERROR_SHOWN = 60
T = TypeVar("T")


# ---- the commands ----------------------------------------------------------------------------


def _run(kafka: KafkaSettings, work: Coroutine[Any, Any, T]) -> T:
    """Run one command's work; what a user can get wrong ends it with one line and exit 1."""
    # The client's own log would repeat a connection failure in lines of its own.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(work)
    except Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KafkaError as exc:
        typer.echo(f"error: Kafka at {kafka.bootstrap_servers}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except TimeoutError as exc:
        typer.echo(f"error: Kafka at {kafka.bootstrap_servers} did not answer in time", err=True)
        raise typer.Exit(1) from exc


def _read(filters: Filters) -> tuple[KafkaSettings, list[Found]]:
    kafka = KafkaSettings()
    found, unreadable = _run(kafka, read_letters(kafka, filters))
    if unreadable:
        typer.echo(f"note: {unreadable} record(s) on the topic are not dead letters", err=True)
    return kafka, found


def summary(found: Found) -> dict[str, Any]:
    letter = found.letter
    return {
        "id": found.id,
        "origin": {
            "topic": letter.origin_topic,
            "partition": letter.origin_partition,
            "offset": letter.origin_offset,
            "key": letter.origin_key,
        },
        "service": letter.service,
        "error_type": letter.error_type,
        "error": letter.error,
        "failed_at": letter.failed_at.isoformat(),
        "payload_size": letter.payload_size,
        "payload_sha256": letter.payload_sha256,
        "payload_truncated": letter.payload_truncated,
    }


def line(found: Found) -> str:
    letter = found.letter
    error = " ".join(letter.error.split())
    if len(error) > ERROR_SHOWN:
        error = error[: ERROR_SHOWN - 1] + "…"
    return (
        f"{found.id[:SHORT_ID]}  {found.origin}  {letter.service}  {letter.error_type}  "
        f"{error}  {letter.failed_at.isoformat(timespec='seconds')}"
    )


Service = Annotated[str | None, typer.Option(help="Only letters of this service.")]
OriginTopic = Annotated[str | None, typer.Option(help="Only letters from this topic.")]
Since = Annotated[
    str | None, typer.Option(help="Only letters since then: 24h, 90m, 7d or an ISO time.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@deadletter_app.command("list")
def list_letters(
    service: Service = None,
    origin_topic: OriginTopic = None,
    since: Since = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the most recent this many.")] = 100,
    as_json: AsJson = False,
) -> None:
    """The dead letters on the topic now, one a line: id, origin, service, error, when."""
    _, found = _read(Filters(service, origin_topic, when(since) if since else None))
    shown = found[-limit:]
    if as_json:
        typer.echo(json.dumps([summary(f) for f in shown], indent=2))
        return
    for f in shown:
        typer.echo(line(f))
    if len(shown) < len(found):
        typer.echo(f"{len(shown)} of {len(found)} shown (--limit)", err=True)


@deadletter_app.command()
def show(
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="Its id (or start), or origin.")],
    as_json: AsJson = False,
) -> None:
    """One dead letter in full: its origin, error, headers and payload."""
    _, found = _read(Filters())
    chosen = _chosen(found, [letter_id])[0]
    letter = chosen.letter
    if as_json:
        typer.echo(json.dumps({**summary(chosen), **letter.model_dump(mode="json")}, indent=2))
        return
    cut = "yes: only the start is kept" if letter.payload_truncated else "no"
    for name, value in [
        ("id", chosen.id),
        ("origin", f"{chosen.origin} (key {letter.origin_key!r})"),
        ("service", letter.service),
        ("error type", letter.error_type),
        ("error", letter.error),
        ("failed at", letter.failed_at.isoformat()),
        ("payload", f"{letter.payload_size} bytes, sha256 {letter.payload_sha256}, cut: {cut}"),
    ]:
        typer.echo(f"{name:<11} {value}")
    typer.echo("headers")
    for key, value in letter.headers.items():
        typer.echo(f"  {key}: {value}")
    typer.echo("payload")
    typer.echo(letter.payload)


def _chosen(found: Sequence[Found], wanted: Sequence[str]) -> list[Found]:
    try:
        return [choose(found, w) for w in wanted]
    except Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@deadletter_app.command("replay")
def replay_letters(
    letter_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ID]...", help="Their ids (or starts), or origins."),
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every letter the filters select.")
    ] = False,
    service: Service = None,
    origin_topic: OriginTopic = None,
    since: Since = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would be sent; send nothing.")] = False,
) -> None:
    """Send the originals of the chosen letters back to their origin topic, unchanged."""
    filters = Filters(service, origin_topic, when(since) if since else None)
    if bool(letter_ids) == replay_all:
        raise typer.BadParameter("give the letters' ids, or --all (with filters), not both")
    if letter_ids and filters != Filters():
        raise typer.BadParameter("--service, --origin-topic and --since go with --all")
    kafka, found = _read(filters)
    chosen = found if replay_all else _chosen(found, letter_ids or [])
    if not chosen:
        typer.echo("no dead letters match", err=True)
        return
    done, refused = _run(kafka, replay(kafka, chosen, dry_run))
    for text in done:
        typer.echo(text)
    for text in refused:
        typer.echo(text, err=True)
    if refused:
        raise typer.Exit(1)
