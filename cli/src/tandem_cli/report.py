"""`tandem report`: the review API's outcomes report (GET /v1/stats) as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tandem_cli.figures import interval, share
from tandem_cli.oversight_report import write_report
from tandem_cli.period import parse_period
from tandem_cli.review_client import DEFAULT_URL, Url, bearer, call
from tandem_cli.window import when

AUDIT_URL = "http://127.0.0.1:8003"
GROUPS = ("task_type", "model", "policy", "day", "queue", "segment", "none")
# Grouped by segment: how each segment departs from the whole, per rate.
GAPS = (
    ("automation_rate", "automation vs all"),
    ("override_rate", "overrides vs all"),
    ("qa_accuracy", "QA accuracy vs all"),
)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}s"


def _percentiles(latency: dict[str, float | None]) -> str:
    return " / ".join(_seconds(latency[p]) for p in ("p50", "p90", "p99"))


def _interval(value: list[float] | None) -> str:
    return f" (95% CI {interval(value)})" if value else ""


def _gap(gap: dict[str, float | None] | None) -> str:
    if gap is None or gap["difference"] is None:
        return "n/a"
    ratio = "" if gap["ratio"] is None else f", x{gap['ratio']:.2f}"
    return f"{gap['difference']:+.1%}{ratio}"


def rows(group: dict[str, Any], compared: bool = False) -> list[tuple[str, str]]:
    """The report's lines for one group; ``compared``: with its gaps to the whole."""
    waits = group["seconds_to_decision"]
    checked = (
        f"{share(group['qa_accuracy'])} of {group['qa_samples_reviewed']}"
        f"{_interval(group['qa_accuracy_interval'])}"
    )
    gaps = [(label, _gap(group["disparity"].get(m))) for m, label in GAPS] if compared else []
    return [
        ("decisions", f"{group['decisions']:,}"),
        ("automatic", f"{group['automatic']:,} ({share(group['automation_rate'])})"),
        ("by people", f"{group['by_people']:,}"),
        ("policy fallbacks (overdue)", f"{group['by_policy_fallback']:,}"),
        ("people overriding the model", share(group["override_rate"])),
        ("reviewers agreeing", share(group["reviewer_agreement"])),
        ("QA: automatic decisions confirmed", checked),
        ("time to decision p50 / p90 / p99, all", _percentiles(waits["all"])),
        ("  automatic", _percentiles(waits["automatic"])),
        ("  people", _percentiles(waits["people"])),
        ("SLA breaches", f"{group['sla_breaches']:,}"),
        ("reviewer hours saved", f"{group['reviewer_hours_saved']:,.1f}"),
        *gaps,
    ]


def report(
    since: Annotated[str, typer.Option(help="Window start: 7d, 24h, or an ISO time.")] = "7d",
    until: Annotated[str, typer.Option(help="Window end: now or an ISO time.")] = "now",
    by: Annotated[
        str, typer.Option(help="task_type, model, policy, day, queue, segment or none.")
    ] = "task_type",
    url: Url = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="TANDEM_REPORT_TOKEN",
            help="A bearer token (senior, admin or auditor; an auditor's for --period).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    period: Annotated[
        str | None,
        typer.Option(
            help="Write the periodic oversight report of 2026-Q4, 2026-11, last-month or "
            "last-quarter to --out instead (HTML, its figures as JSON, PDF with Chromium)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where --period writes its files.")] = None,
    audit_url: Annotated[
        str, typer.Option(envvar="TANDEM_AUDIT_API_URL", help="The audit API (for --period).")
    ] = AUDIT_URL,
) -> None:
    """Automation, overrides, agreement, QA accuracy, time to decision, SLA breaches and
    reviewer time saved, side by side per group; or, with --period, the oversight report of
    a month or quarter as files."""
    if period is not None:
        _periodic(period, out, url, audit_url, token)
        return
    if by not in GROUPS:
        raise typer.BadParameter(f"--by is one of {', '.join(GROUPS)}")
    params = {"since": when(since).isoformat(), "until": when(until).isoformat(), "group_by": by}
    auditor = bearer(token, "auditor", "tandem-report")
    response = call("GET", url, "/v1/stats", auditor, params=params)
    if as_json:
        typer.echo(response.text)
        return
    data = response.json()
    table = Table(title=f"Tandem outcomes, {data['since'][:16]} to {data['until'][:16]}")
    table.add_column("")
    # By segment, the whole comes first: each segment is read against it.
    compared = by == "segment" and bool(data["groups"])
    groups = [data["overall"], *data["groups"]] if compared else data["groups"]
    for group in groups:
        table.add_column(group["key"], justify="right")
    lines = [rows(g, compared) for g in groups]
    for i, (label, _) in enumerate(lines[0] if lines else []):
        table.add_row(label, *(g[i][1] for g in lines))
    Console(width=max(100, 40 + 28 * len(lines))).print(table)
    if not lines:
        typer.echo("no decisions and no reviews in that window")
    if data["automation_bias"]:
        Console(width=140).print(bias_table(data["automation_bias"]))
    if data["reviewer_feedback"]:
        Console(width=140).print(feedback_table(data["reviewer_feedback"]))


def _periodic(text: str, out: Path | None, url: str, audit_url: str, token: str | None) -> None:
    if out is None:
        raise typer.BadParameter("--period writes files: give --out DIR")
    try:
        period = parse_period(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    written = write_report(period, out, url, audit_url, bearer(token, "auditor", "tandem-report"))
    typer.echo(f"wrote {written.html} and {written.figures}")
    typer.echo(f"wrote {written.pdf}" if written.pdf else "no PDF: Chromium is not installed")


def feedback_table(rows: list[dict[str, Any]]) -> Table:
    """What reviewers said of each model version: ratings (1-5), notes and flags."""
    table = Table(title="What reviewers said of the model (ratings 1 to 5)")
    for name in ("task type", "model", "rated", "explanation useful", "trust", "notes", "flags"):
        table.add_column(name, justify="left" if name in ("task type", "model") else "right")
    for r in rows:
        flags = ", ".join(f"{kind} {n}" for kind, n in sorted(r["flags"].items())) or "none"
        table.add_row(
            r["task_type"],
            r["model"],
            f"{r['rated']:,}",
            _mean(r["explanation_useful"]),
            _mean(r["trust"]),
            f"{r['notes']:,}",
            flags,
        )
    return table


def _mean(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def bias_table(rows: list[dict[str, Any]]) -> Table:
    """Blind reviews: agreement with the model before and after its view was shown."""
    table = Table(title="Blind reviews: agreement with the model before and after the reveal")
    for name in ("reviewer", "task type", "model", "first looks", "agreed before"):
        table.add_column(name, justify="right" if name != "reviewer" else "left")
    for name in ("agreed after", "changed", "switched to the model"):
        table.add_column(name, justify="right")
    for r in rows:
        switched = f"{r['switched_to_model']} ({share(r['switched_to_model_rate'])})"
        table.add_row(
            r["reviewer"],
            r["task_type"],
            r["model"],
            f"{r['first_looks']:,}",
            share(r["agreement_before_reveal"]),
            share(r["agreement_after_reveal"]),
            share(r["changed_after_reveal"]),
            switched,
        )
    return table
