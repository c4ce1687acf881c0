"""Alembic environment of the audit sink: the shared runner with this service's tables."""

from tandem_audit_sink.tables import metadata
from tandem_shared.db import run_migrations

run_migrations(metadata, version_table="alembic_version_audit")
