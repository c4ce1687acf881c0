"""The audit sink's own metrics, registered on the runtime's registry."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from tandem_audit_sink.checkpoint import Checkpoint
from tandem_audit_sink.shards import ShardedAppend
from tandem_audit_sink.verify import VerifyResult


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._sizes: dict[int, int] = {}
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
        self.conflicts = Counter(
            "tandem_audit_conflicts",
            "Events whose (source, id) was already in the ledger with other content: appended "
            "as conflicts, and reported by the completeness check.",
            ["topic"],
            registry=registry,
        )
        self.tree_size = Gauge(
            "tandem_audit_tree_size",
            "Entries in the audit ledger's Merkle trees (all shards), as this process saw them.",
            registry=registry,
        )
        self.shard_tree_size = Gauge(
            "tandem_audit_shard_tree_size",
            "Entries in each shard's Merkle tree, as this process last saw it.",
            ["shard"],
            registry=registry,
        )
        self.checkpoints = Counter(
            "tandem_audit_checkpoints",
            "Signed checkpoints of the audit ledger made by this process.",
            registry=registry,
        )
        self.checkpoint_size = Gauge(
            "tandem_audit_checkpoint_tree_size",
            "Tree size of the newest signed checkpoint.",
            registry=registry,
        )
        self.verified_size = Gauge(
            "tandem_audit_verified_tree_size",
            "Tree size up to which the sink's own periodic verification last succeeded.",
            registry=registry,
        )
        self.verify_failures = Counter(
            "tandem_audit_verify_failures",
            "Ledger verifications that found a bad entry, block or checkpoint.",
            registry=registry,
        )

    def sizes(self, sizes: Mapping[int, int]) -> None:
        """The shards' tree sizes as just read or appended (the others as last seen)."""
        self._sizes.update(sizes)
        for shard, size in sizes.items():
            self.shard_tree_size.labels(str(shard)).set(size)
        self.tree_size.set(sum(self._sizes.values()))

    def appended(self, result: ShardedAppend) -> None:
        for entry in result.appended:
            self.entries.labels(entry.topic).inc()
        for record in result.duplicates:
            self.duplicates.labels(record.topic).inc()
        for entry in result.conflicts:
            self.conflicts.labels(entry.topic).inc()
        self.sizes({shard: done.tree_size for shard, done in result.results.items()})
        for checkpoint in result.checkpoints:
            self.checkpointed(checkpoint)

    def checkpointed(self, checkpoint: Checkpoint) -> None:
        self.checkpoints.inc()
        self.checkpoint_size.set(checkpoint.tree_size)

    def verified(self, result: VerifyResult) -> None:
        if not result.ok:
            self.verify_failures.inc()
