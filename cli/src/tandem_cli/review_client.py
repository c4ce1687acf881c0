"""Calling the review API from the command line: its URL and a token as options, and a
refusal or an unreachable API ending the command with what went wrong."""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer
from tandem_shared.auth import mint_token
from tandem_shared.settings import RuntimeSettings

Url = Annotated[str, typer.Option(envvar="TANDEM_REVIEW_API_URL", help="The review API.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def bearer(given: str | None, role: str, subject: str) -> str:
    """The given token, TANDEM_TOKEN, or (in development only) one minted locally for
    ``subject`` with ``role``."""
    token = given or os.environ.get("TANDEM_TOKEN")
    if token:
        return token
    settings = RuntimeSettings()
    if settings.env != "development":
        raise typer.BadParameter("pass --token (or set TANDEM_TOKEN) outside development")
    return mint_token(settings, subject, [role])


def call(method: str, url: str, path: str, token: str, **options: Any) -> httpx.Response:
    """One request; anything but a 2xx ends the command with the API's answer."""
    try:
        response = httpx.request(
            method, f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, **options
        )
    except httpx.TransportError as exc:
        typer.echo(f"cannot reach the review API at {url}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not response.is_success:
        typer.echo(f"the review API answered {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    return response
