"""`tandem risk`: the risk register on the review API (/v1/risks): list it, show a
risk's versions, write a risk from a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from tandem_cli.review_client import DEFAULT_URL, Url, bearer, call

risk_app = typer.Typer(help="The risk register: list, history, put.", no_args_is_help=True)
Token = Annotated[str | None, typer.Option(help="A bearer token (senior, admin or auditor).")]


def register_table(risks: list[dict[str, Any]]) -> Table:
    table = Table(title="Tandem risk register")
    for column in ("risk", "v", "likelihood", "impact", "owner", "mitigations", "review by"):
        table.add_column(column)
    for r in risks:
        review = r["review_by"] + (" (overdue)" if r["review_overdue"] else "")
        mitigations = ", ".join(f"{m['kind']}:{m['ref']}" for m in r["mitigations"]) or "none"
        table.add_row(
            f"{r['id']}: {r['title']}",
            str(r["version"]),
            r["likelihood"],
            r["impact"],
            r["owner"],
            mitigations,
            review,
        )
    return table


@risk_app.command("list")
def list_risks(url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Every risk at its latest version; those past their review date are marked."""
    risks = call("GET", url, "/v1/risks", bearer(token, "auditor", "tandem-risk")).json()
    if not risks:
        typer.echo("the register holds no risk")
        return
    Console(width=160).print(register_table(risks))


@risk_app.command()
def history(
    risk_id: Annotated[str, typer.Argument(help="The risk's id.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Every version of one risk, with who wrote it and when."""
    path = f"/v1/risks/{risk_id}/history"
    for version in call("GET", url, path, bearer(token, "auditor", "tandem-risk")).json():
        typer.echo(
            f"v{version['version']} {version['changed_at']} by {version['changed_by']}: "
            f"{version['likelihood']}/{version['impact']}, owner {version['owner']}"
        )


@risk_app.command()
def put(
    risk_id: Annotated[str, typer.Argument(help="The risk's id (a-z, 0-9, _ . -).")],
    file: Annotated[Path, typer.Argument(help="The risk as YAML (docs/operations.md).")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Write the risk's next version (an admin any risk, a senior the ones they own)."""
    body = yaml.safe_load(file.read_text(encoding="utf-8"))
    if not isinstance(body, dict):
        raise typer.BadParameter(f"{file}: a risk is a mapping of its fields")
    # YAML reads a date as a date: the API takes it as its ISO text.
    body = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in body.items()}
    admin = bearer(token, "admin", "tandem-risk")
    written = call("PUT", url, f"/v1/risks/{risk_id}", admin, json=body).json()
    typer.echo(f"risk {written['id']} v{written['version']} written by {written['changed_by']}")
