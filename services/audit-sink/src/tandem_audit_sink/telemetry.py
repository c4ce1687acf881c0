"""The audit sink's own metrics, registered on the runtime's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from tandem_audit_sink.ledger import Head, VerifyResult
from tandem_audit_sink.store import AppendResult


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.entries = Counter(
            "tandem_audit_entries",
            "Events appended to the audit ledger.",
            ["topic"],
            registry=registry,
        )
        self.duplicates = Counter(
            "tandem_audit_duplicates",
            "Events already in the ledger (redelivered or replayed), not appended again.",
            ["topic"],
            registry=registry,
        )
        self.chain_length = Gauge(
            "tandem_audit_chain_length",
            "Entries in the audit ledger's hash chain.",
            registry=registry,
        )
        self.verify_failures = Counter(
            "tandem_audit_verify_failures",
            "Ledger verifications that found a bad row.",
            registry=registry,
        )

    def appended(self, result: AppendResult) -> None:
        for entry in result.appended:
            self.entries.labels(entry.topic).inc()
        for record in result.duplicates:
            self.duplicates.labels(record.topic).inc()
        if result.head is not None:
            self.head(result.head)

    def head(self, head: Head) -> None:
        self.chain_length.set(head.seq)

    def verified(self, result: VerifyResult) -> None:
        if not result.ok:
            self.verify_failures.inc()
