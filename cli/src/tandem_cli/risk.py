"""`tandem risk`: the risk register on the review API (/v1/risks): list it, show a
risk's versions, write a risk from a YAML file, or a directory of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from tandem_shared.risks import Risk

from tandem_cli.review_client import DEFAULT_URL, Url, bearer, call

risk_app = typer.Typer(help="The risk register: list, history, put, load.", no_args_is_help=True)
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


def read_risk(file: Path) -> dict[str, Any]:
    body = yaml.safe_load(file.read_text(encoding="utf-8"))
    if not isinstance(body, dict):
        raise typer.BadParameter(f"{file}: a risk is a mapping of its fields")
    # YAML reads a date as a date: the API takes it as its ISO text.
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in body.items()}


def write_risk(url: str, token: str | None, risk_id: str, body: dict[str, Any]) -> None:
    admin = bearer(token, "admin", "tandem-risk")
    written = call("PUT", url, f"/v1/risks/{risk_id}", admin, json=body).json()
    typer.echo(f"risk {written['id']} v{written['version']} written by {written['changed_by']}")


@risk_app.command()
def put(
    risk_id: Annotated[str, typer.Argument(help="The risk's id (a-z, 0-9, _ . -).")],
    file: Annotated[Path, typer.Argument(help="The risk as YAML (docs/operations.md).")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Write the risk's next version (an admin any risk, a senior the ones they own)."""
    write_risk(url, token, risk_id, read_risk(file))


@risk_app.command()
def load(
    directory: Annotated[
        Path, typer.Argument(help="A risk a file, named ID.yaml (deploy/risks is a start).")
    ],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Write every risk of a directory whose register version differs from its file."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise typer.BadParameter(f"{directory}: no ID.yaml file of a risk")
    path = "/v1/risks"
    held = {
        r["id"]: r for r in call("GET", url, path, bearer(token, "admin", "tandem-risk")).json()
    }
    for file in files:
        risk_id, body = file.stem, read_risk(file)
        current = held.get(risk_id)
        if current is not None and _same(body, current):
            typer.echo(f"risk {risk_id} v{current['version']} unchanged")
            continue
        write_risk(url, token, risk_id, body)


def _same(body: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether the file says what the register holds (defaults filled in, as the API would)."""
    try:
        wanted = Risk.model_validate(body).model_dump(mode="json")
    except ValidationError:
        return False  # the API refuses it with the field named
    return all(current.get(field) == value for field, value in wanted.items())
