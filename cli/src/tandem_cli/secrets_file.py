"""`tandem secrets`: the secrets the Compose stack needs, made once into an env file that
Compose reads (`.env`, ignored by git). Values already there are kept, so running it again
changes nothing, and a key that signed ledger checkpoints is never replaced."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from tandem_audit_sink.checkpoint import Signer
from tandem_shared.settings import MIN_SECRET_BYTES

# What each secret is made of; the JWT secret is twice the length production asks for.
MAKERS: dict[str, Callable[[], str]] = {
    "TANDEM_JWT_SECRET": lambda: secrets.token_urlsafe(2 * MIN_SECRET_BYTES),
    "TANDEM_AUDIT_SIGNING_KEY": lambda: Signer.generate("tandem-audit").private_text(),
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "GRAFANA_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(18),
}


def present(path: Path) -> set[str]:
    """The variables the env file sets."""
    if not path.exists():
        return set()
    names = set()
    for line in path.read_text().splitlines():
        name, eq, _ = line.partition("=")
        if eq and not name.lstrip().startswith("#"):
            names.add(name.strip())
    return names


def fill(path: Path) -> list[str]:
    """Add the secrets the file lacks; the names added."""
    missing = [name for name in MAKERS if name not in present(path)]
    if missing:
        lines = [f"{name}={MAKERS[name]()}" for name in missing]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as out:
            if path.stat().st_size and not path.read_text().endswith("\n"):
                out.write("\n")
            out.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return missing


def secrets_command(
    env_file: Annotated[Path, typer.Argument(help="The env file Compose reads.")] = Path(".env"),
) -> None:
    """Make the Compose stack's secrets once (a JWT secret, the ledger's signing key, database
    and Grafana passwords) into ENV_FILE, readable by its owner only; keeps what is there."""
    made = fill(env_file)
    if made:
        typer.echo(f"{env_file}: made {', '.join(made)}")
    else:
        typer.echo(f"{env_file}: every secret is already set")
