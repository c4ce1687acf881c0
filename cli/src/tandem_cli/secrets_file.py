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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tandem_audit_sink.checkpoint import Signer
from tandem_shared.settings import MIN_SECRET_BYTES
from tandem_shared.signing import private_key, private_text, public_text

Values = dict[str, str]

# What each secret is made of, in order: a maker sees the values made or kept before it.
MAKERS: dict[str, Callable[[Values], str]] = {
    "TANDEM_JWT_SECRET": lambda _: secrets.token_urlsafe(2 * MIN_SECRET_BYTES),
    "TANDEM_AUDIT_SIGNING_KEY": lambda _: Signer.generate("tandem-audit").private_text(),
    "TANDEM_CONTROL_SIGNING_KEY": lambda _: private_text(Ed25519PrivateKey.generate()),
    # Whose control changes the services follow: the public half of the key above.
    "TANDEM_CONTROL_TRUSTED_KEYS": lambda made: public_text(
        private_key(made["TANDEM_CONTROL_SIGNING_KEY"], "TANDEM_CONTROL_SIGNING_KEY")
    ),
    # The review API signs the decisions it publishes with it (people's decisions close
    # reviews only when it signed them).
    "TANDEM_REVIEW_API_DECISION_SIGNING_KEY": lambda _: private_text(Ed25519PrivateKey.generate()),
    "POSTGRES_PASSWORD": lambda _: secrets.token_urlsafe(24),
    # The audit sink's own login, which may only read and append to the ledger (URL-safe: it
    # goes into the sink's database URL as it is).
    "AUDIT_DB_PASSWORD": lambda _: secrets.token_urlsafe(24),
    "GRAFANA_ADMIN_PASSWORD": lambda _: secrets.token_urlsafe(18),
}


def present(path: Path) -> Values:
    """The variables the env file sets, with their values."""
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        name, eq, value = line.partition("=")
        if eq and not name.lstrip().startswith("#"):
            values[name.strip()] = value.strip()
    return values


def fill(path: Path) -> list[str]:
    """Add the secrets the file lacks; the names added."""
    values = present(path)
    missing = [name for name in MAKERS if name not in values]
    for name in missing:
        values[name] = MAKERS[name](values)
    if missing:
        lines = [f"{name}={values[name]}" for name in missing]
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
    """Make the Compose stack's secrets once (a JWT secret; the ledger's, the control topic's
    and the review API's decision signing keys; the database owner's, the audit sink's and
    Grafana's passwords) into ENV_FILE, readable by its owner only; keeps what is there."""
    made = fill(env_file)
    if made:
        typer.echo(f"{env_file}: made {', '.join(made)}")
    else:
        typer.echo(f"{env_file}: every secret is already set")
