"""Writing the periodic oversight report: the figures gathered from the review and audit APIs,
the HTML page, its figures as JSON beside it, and a PDF where Chromium is installed."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import typer

from tandem_cli.oversight import gather
from tandem_cli.oversight_html import render
from tandem_cli.period import Period

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PDF_SECONDS = 120


@dataclass(frozen=True)
class Written:
    html: Path
    figures: Path
    pdf: Path | None  # None: no Chromium here


def write_report(period: Period, out: Path, review_url: str, audit_url: str, token: str) -> Written:
    """Gather the period's figures and write the report's files into ``out``."""
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=review_url, headers=headers, timeout=120) as review,
        httpx.Client(base_url=audit_url, headers=headers, timeout=300) as audit,
    ):
        figures = gather(
            period,
            lambda path, what, params: _get(review, "review API", path, what, params),
            lambda path, what, params: _get(audit, "audit API", path, what, params),
            datetime.now(UTC),
        )
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"oversight-{period.label}"
    html = stem.with_suffix(".html")
    html.write_text(render(figures), encoding="utf-8")
    data = stem.with_suffix(".json")
    data.write_text(figures.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return Written(html, data, print_pdf(html))


def print_pdf(html: Path) -> Path | None:
    """The page printed by headless Chromium, if one is installed; None otherwise."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        return None
    pdf = html.with_suffix(".pdf")
    # --no-sandbox: containers run the job without the namespaces Chromium's sandbox needs.
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
        f"--print-to-pdf={pdf}", html.resolve().as_uri(),
    ]  # fmt: skip
    try:
        subprocess.run(command, capture_output=True, timeout=PDF_SECONDS, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        typer.echo(f"no PDF: Chromium failed ({exc})", err=True)
        return None
    return pdf if pdf.is_file() else None


def _get(
    client: httpx.Client, api: str, path: str, what: str, params: dict[str, str]
) -> httpx.Response:
    """A GET the report needs; a refusal or an unreachable API ends the command, saying which."""
    try:
        response = client.get(path, params=params)
    except httpx.TransportError as exc:
        typer.echo(f"cannot reach the {api} at {client.base_url} for {what}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if response.status_code == 404 and path.endswith("/latest"):
        return response  # no checkpoint yet: the report says so
    if not response.is_success:
        typer.echo(
            f"the {api} answered {response.status_code} for {what}: {response.text}", err=True
        )
        raise typer.Exit(1)
    return response
