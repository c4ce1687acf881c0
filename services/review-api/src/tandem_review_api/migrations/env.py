from tandem_review_api.tables import metadata
from tandem_shared.db import run_migrations

run_migrations(metadata)
