from tandem_review_api.tables import metadata
from tandem_shared.db import run_migrations

run_migrations(metadata, version_table="alembic_version_review_api")
