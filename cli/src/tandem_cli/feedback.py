"""`tandem feedback export`: the labels people gave, as a training set a retraining job reads.

Every human verdict (QA samples included) is a record on tandem.feedback with the features, the
model's output and version, and the label. A task judged more than once (two approvers, then a
senior) is one row: its last label; how far the people who judged it agreed beyond chance is
written beside the set (``<name>.agreement.json``).
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from tandem_review_api.agreement import Agreement, Judged, agreement
from tandem_shared.envelope import Event
from tandem_shared.events import EventData, FeedbackRecorded
from tandem_shared.reading import read_events
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

from tandem_cli.window import when

feedback_app = typer.Typer(
    help="Human labels from tandem.feedback: a training set.", no_args_is_help=True
)
FEEDBACK: dict[str, type[EventData]] = {"tandem.feedback.recorded.v1": FeedbackRecorded}
FORMATS = {".parquet": "parquet", ".csv": "csv"}


# The task's segment (the policy's segment attributes), a text column each: segment.clinic.
SEGMENT_COLUMN = "segment."


def training_rows(records: Sequence[FeedbackRecorded]) -> list[dict[str, Any]]:
    """One row per task, its last label: the features as columns (in the order first seen),
    then what the model said and what people decided."""
    last: dict[str, FeedbackRecorded] = {}
    for r in sorted(records, key=lambda r: r.labelled_at):
        last[r.task_id] = r
    features = list(dict.fromkeys(name for r in last.values() for name in r.features))
    segments = list(dict.fromkeys(name for r in last.values() for name in r.segment))
    rows = []
    for r in sorted(last.values(), key=lambda r: (r.labelled_at, r.task_id)):
        rows.append(
            {
                "task_id": r.task_id,
                "task_type": r.task_type,
                **{name: r.features.get(name) for name in features},
                "model_name": r.model.name,
                "model_version": r.model.version,
                "prediction": r.prediction,
                "confidence": r.confidence,
                "label": r.label,
                "agreed": r.agreed,
                "qa_sample": r.qa_sample,
                "reviewer": r.reviewer,
                "policy_name": r.policy.name,
                "policy_version": r.policy.version,
                "labelled_at": r.labelled_at,
                **{f"{SEGMENT_COLUMN}{name}": r.segment.get(name) for name in segments},
            }
        )
    return rows


def agreement_of(records: Sequence[FeedbackRecorded]) -> list[Agreement]:
    """Inter-reviewer agreement on the tasks several people labelled (each person's last)."""
    labels: dict[str, dict[str, str]] = defaultdict(dict)
    types: dict[str, str] = {}
    for r in sorted(records, key=lambda r: r.labelled_at):
        labels[r.task_id].pop(r.reviewer, None)  # a person's last label, in the order given
        labels[r.task_id][r.reviewer] = r.label
        types[r.task_id] = r.task_type
    return agreement(Judged(types[t], tuple(given.items())) for t, given in labels.items())


def agreement_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.agreement.json")


def write(rows: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if FORMATS[out.suffix] == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), out)
        return
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task_id"])
        writer.writeheader()
        writer.writerows(rows)


_TEXT_COLUMNS = {
    "task_id",
    "task_type",
    "model_name",
    "model_version",
    "prediction",
    "label",
    "reviewer",
    "policy_name",
    "labelled_at",
}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A training set written by ``export`` (.parquet or .csv), its numbers as numbers."""
    if path.suffix not in FORMATS:
        raise ValueError(f"{path.name}: a training set ends in .parquet or .csv")
    if FORMATS[path.suffix] == "parquet":
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return rows
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: _cell(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def _cell(column: str, text: str) -> Any:
    if column.startswith(SEGMENT_COLUMN):
        return text or None  # a segment is text, however it looks; empty: the task had none
    return text if column in _TEXT_COLUMNS else _number(text)


def _number(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return None if text == "" else text


async def feedback_rows(kafka: KafkaSettings, since: str | None = None) -> list[dict[str, Any]]:
    """The training set as ``export`` would write it, read from the feedback topic."""
    return training_rows(await _read(kafka, None, since))


async def _read(
    kafka: KafkaSettings, task_type: str | None, since: str | None
) -> list[FeedbackRecorded]:
    found: list[FeedbackRecorded] = []

    def keep(event: Event[EventData]) -> None:
        data = event.data
        if isinstance(data, FeedbackRecorded) and task_type in (None, data.task_type):
            found.append(data)

    start = when(since) if since else None
    await read_events(
        kafka.bootstrap_servers, Topics(kafka.topic_prefix).feedback, FEEDBACK, keep, start
    )
    return found


@feedback_app.command()
def export(
    out: Annotated[Path, typer.Argument(help="The file to write: .parquet or .csv.")],
    task_type: Annotated[
        str | None, typer.Option(help="Only this task type (needed when there are several).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only labels since then: 7d, 24h, or an ISO time.")
    ] = None,
) -> None:
    """Write the labels people gave as a training set, one row per task."""
    if out.suffix not in FORMATS:
        raise typer.BadParameter(f"{out.name}: the file must end in .parquet or .csv")
    records = asyncio.run(_read(KafkaSettings(), task_type, since))
    types = sorted({r.task_type for r in records})
    if len(types) > 1:
        typer.echo(
            f"labels of several task types ({', '.join(types)}): choose one with --task-type",
            err=True,
        )
        raise typer.Exit(1)
    rows = training_rows(records)
    write(rows, out)
    typer.echo(f"wrote {len(rows)} labelled tasks ({len(records)} verdicts) to {out}")
    agreed = agreement_of(records)
    beside = agreement_path(out)
    beside.write_text(json.dumps([a.model_dump() for a in agreed], indent=2) + "\n")
    for a in agreed:
        if a.scope == "task_type":
            typer.echo(
                f"agreement on {a.key}: {a.tasks} tasks judged by several people, observed"
                f" {a.observed}, Cohen's kappa {a.cohen_kappa}, Fleiss' kappa {a.fleiss_kappa}"
            )
    typer.echo(f"wrote agreement by task type and reviewer to {beside}")
