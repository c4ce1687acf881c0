"""Audit-sink settings, read from TANDEM_AUDIT_*."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from tandem_shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_AUDIT_")

    port: int = 8003
    group_id: str = "tandem-audit-sink"
    database_url: str = "sqlite+aiosqlite:///.tandem/audit-sink.db"
    # Further shards of the ledger, a database each (JSON list): the ledger is then
    # len + 1 logs, ``database_url`` the first and the home of the signed roots over them. A
    # record goes to shard ``partition % shards``; keep the list as it is once records came.
    shard_database_urls: list[str] = Field(default_factory=list)
    # Off where a migration Job owns the schema and the service's role may only insert and read.
    migrate_on_start: bool = True
    verify_chunk_size: int = Field(default=1000, ge=1)
    # Checkpoints: signed every N entries or T seconds, whichever comes first.
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_seconds: float = Field(default=10.0, gt=0)
    # The sink verifies what was added since its last good verification this often, and the
    # whole ledger every so many times (an entry changed after it was verified shows then).
    verify_seconds: float = Field(default=300.0, gt=0)
    verify_whole_every: int = Field(default=12, ge=1)
    completeness_max_days: int = Field(
        default=92, ge=1, description="The longest window /v1/audit/completeness reads in one call."
    )
    # Days of entries `tandem audit archive` keeps in the database; older whole blocks go to
    # archive files that keep their proofs. The EU AI Act asks deployers for six months at least.
    retention_days: int = Field(default=183, ge=1)
    # The Ed25519 private key (32 raw bytes in base64, or PKCS#8 PEM); `tandem audit keygen`
    # makes one. Without it, development runs sign with a key that lives as long as the process.
    signing_key: SecretStr | None = None
    origin: str = "tandem-audit"
    # Fields of event data stored only as HMAC-SHA256 under the privacy key.
    private_fields: list[str] = Field(default_factory=list)
    privacy_key: SecretStr | None = None

    @property
    def database_urls(self) -> list[str]:
        """Every shard's database, the first shard's first."""
        return [self.database_url, *self.shard_database_urls]

    @model_validator(mode="after")
    def _keys_are_set(self) -> AuditSettings:
        if self.private_fields and self.privacy_key is None:
            raise ValueError("TANDEM_AUDIT_PRIVATE_FIELDS needs TANDEM_AUDIT_PRIVACY_KEY")
        if len(set(self.database_urls)) != len(self.database_urls):
            raise ValueError("each shard of the ledger needs a database of its own")
        if self.runtime.env != "development" and self.signing_key is None:
            raise ValueError("TANDEM_AUDIT_SIGNING_KEY must be set outside development")
        return self
