"""``python -m tandem_audit_sink``: run the audit sink in the foreground."""

from tandem_shared.service import serve

from tandem_audit_sink.app import create_app
from tandem_audit_sink.settings import AuditSettings

settings = AuditSettings()
serve(create_app(settings), settings)
