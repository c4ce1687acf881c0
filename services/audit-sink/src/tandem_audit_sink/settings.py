"""Audit-sink settings, read from TANDEM_AUDIT_*."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tandem_shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_AUDIT_")

    port: int = 8003
    group_id: str = "tandem-audit-sink"
    database_url: str = "sqlite+aiosqlite:///.tandem/audit-sink.db"
    verify_chunk_size: int = Field(default=1000, ge=1)
