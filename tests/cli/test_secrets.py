"""`tandem secrets`: the Compose stack's secrets made once, strong enough for production, and
never replaced."""

from __future__ import annotations

import stat
from pathlib import Path

from tandem_audit_sink.settings import AuditSettings
from tandem_cli.main import app
from tandem_cli.secrets_file import MAKERS
from tandem_review_api.settings import ReviewApiSettings
from tandem_shared.control_signing import ControlSigner, ControlTrust
from tandem_shared.settings import RuntimeSettings
from typer.testing import CliRunner

runner = CliRunner()


def values(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if "=" in line]
    return {name: value for name, _, value in (line.partition("=") for line in lines)}


def test_secrets_are_made_once_for_production_and_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    env = tmp_path / ".env"
    made = runner.invoke(app, ["secrets", str(env)])
    assert made.exit_code == 0, made.output
    first = values(env)
    assert set(first) == {
        "TANDEM_JWT_SECRET",
        "TANDEM_AUDIT_SIGNING_KEY",
        "TANDEM_CONTROL_SIGNING_KEY",
        "TANDEM_CONTROL_TRUSTED_KEYS",
        "TANDEM_REVIEW_API_DECISION_SIGNING_KEY",
        "POSTGRES_PASSWORD",
        "AUDIT_DB_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    }
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    # What production refuses (a short or public secret, no signing key) is not among them,
    # and the services trust what the control key signs.
    runtime = RuntimeSettings(
        env="production",
        jwt_secret=first["TANDEM_JWT_SECRET"],  # type: ignore[arg-type]
        control_signing_key=first["TANDEM_CONTROL_SIGNING_KEY"],  # type: ignore[arg-type]
        control_trusted_keys=first["TANDEM_CONTROL_TRUSTED_KEYS"],
    )
    AuditSettings(runtime=runtime, signing_key=first["TANDEM_AUDIT_SIGNING_KEY"])  # type: ignore[arg-type]
    key = first["TANDEM_REVIEW_API_DECISION_SIGNING_KEY"]
    ReviewApiSettings(runtime=runtime, decision_signing_key=key)  # type: ignore[arg-type]
    signer = ControlSigner.from_settings(runtime)
    assert signer is not None and signer.key_id in ControlTrust.from_settings(runtime).keys

    again = runner.invoke(app, ["secrets", str(env)])
    assert again.exit_code == 0 and "already set" in again.output
    assert values(env) == first
    assert first["TANDEM_JWT_SECRET"] not in made.output + again.output


def test_secrets_keep_what_the_file_already_sets(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# mine\nPOSTGRES_PASSWORD=chosen-by-hand")  # no final newline
    assert runner.invoke(app, ["secrets", str(env)]).exit_code == 0
    kept = values(env)
    assert kept["POSTGRES_PASSWORD"] == "chosen-by-hand"
    assert len(kept) == len(MAKERS) and env.read_text().startswith("# mine\n")
