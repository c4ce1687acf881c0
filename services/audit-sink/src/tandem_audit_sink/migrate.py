"""``python -m tandem_audit_sink.migrate``: the migration step, run by the schema's owner before
the service starts (a Kubernetes Job, a one-shot Compose service).

It migrates with ``TANDEM_AUDIT_OWNER_DATABASE_URL``, then makes the user and password of the
service's ``TANDEM_AUDIT_DATABASE_URL`` a login in the writer role (roles.py), so the service
itself may only read and append; and the same for each further shard of the ledger, pair by
pair: ``TANDEM_AUDIT_SHARD_OWNER_DATABASE_URLS`` with ``TANDEM_AUDIT_SHARD_DATABASE_URLS``.
Running it again changes nothing but a changed password. On SQLite there are no roles: it only
migrates.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from tandem_shared.db import is_sqlite
from tandem_shared.logging import setup_logging

from tandem_audit_sink.roles import WRITER_ROLE, RoleError, ServiceLogin, grant_login
from tandem_audit_sink.store import migrate

log = logging.getLogger(__name__)


class MigrationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_AUDIT_")

    # The schema's owner: it creates the tables and the writer role, and grants the login.
    owner_database_url: SecretStr
    # The service's own URL: its user and password are the login made here.
    database_url: SecretStr
    # The further shards, in order: their owners' URLs and the service's (JSON lists).
    shard_owner_database_urls: list[SecretStr] = Field(default_factory=list)
    shard_database_urls: list[SecretStr] = Field(default_factory=list)
    # Logged as the services log (the image sets TANDEM_LOG_JSON).
    log_level: str = Field(default="INFO", validation_alias="TANDEM_LOG_LEVEL")
    log_json: bool = Field(default=False, validation_alias="TANDEM_LOG_JSON")


async def migrate_as_owner(owner_url: str, service_url: str) -> None:
    """Migrate as the owner, then make the service's login a member of the writer role."""
    await migrate(owner_url)
    if is_sqlite(owner_url):
        log.info("migrated; SQLite has no roles, so the service's login is left as it is")
        return
    login = ServiceLogin.of_url(service_url)
    await grant_login(owner_url, login)
    log.info("migrated; the service logs in as %s, a member of %s", login.name, WRITER_ROLE)


def _variable(field: str) -> str:
    return field if field.startswith("TANDEM_") else f"TANDEM_AUDIT_{field.upper()}"


def main() -> None:
    try:
        settings = MigrationSettings()
    except ValidationError as exc:  # named, never shown: the values are secrets
        names = ", ".join(_variable(str(e["loc"][0])) for e in exc.errors())
        raise SystemExit(f"audit-sink migrations: check {names}") from None
    setup_logging(settings.log_level, settings.log_json)
    owners = [settings.owner_database_url, *settings.shard_owner_database_urls]
    services = [settings.database_url, *settings.shard_database_urls]
    if len(owners) != len(services):
        raise SystemExit(
            "audit-sink migrations: TANDEM_AUDIT_SHARD_OWNER_DATABASE_URLS needs one URL for "
            "each of TANDEM_AUDIT_SHARD_DATABASE_URLS"
        )
    try:
        for owner, service in zip(owners, services, strict=True):
            asyncio.run(migrate_as_owner(owner.get_secret_value(), service.get_secret_value()))
    except RoleError as exc:
        raise SystemExit(f"audit-sink migrations: {exc}") from None


if __name__ == "__main__":
    main()
