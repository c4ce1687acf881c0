"""``python -m tandem_audit_sink``: run the audit sink in the foreground."""

from tandem_shared.service import main

from tandem_audit_sink.app import create_app
from tandem_audit_sink.settings import AuditSettings

if __name__ == "__main__":
    main("tandem-audit-sink", AuditSettings, create_app)
