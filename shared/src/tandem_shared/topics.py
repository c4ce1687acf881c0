"""Topic names (the prefix is configurable) and their creation."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from tandem_shared import clients
from tandem_shared.settings import TASK_RETENTION_MS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    prefix: str = "tandem."

    @property
    def submitted(self) -> str:
        return f"{self.prefix}tasks.submitted"

    @property
    def scored(self) -> str:
        return f"{self.prefix}tasks.scored"

    @property
    def routed(self) -> str:
        return f"{self.prefix}tasks.routed"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}decisions"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}feedback"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def checkpoints(self) -> str:
        """The audit ledger's signed checkpoints (not itself audited: that would never settle)."""
        return f"{self.prefix}audit.checkpoints"

    @property
    def router_seen(self) -> str:
        """The router's changelog of routed task ids, partitioned like the scored topic: what
        makes a task id decided once across restarts and rebalances (not audited: state)."""
        return f"{self.prefix}router.seen"

    def all(self) -> list[str]:
        return [*self.audited(), self.checkpoints, self.router_seen]

    def configs(self, task_retention_ms: int = TASK_RETENTION_MS) -> dict[str, dict[str, str]]:
        """Topic settings other than the broker's defaults."""
        return {
            self.control: {"cleanup.policy": "compact"},
            # Compacted to the last entry per task id; older than the retention, forgotten.
            self.router_seen: {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(task_retention_ms),
            },
        }

    def audited(self) -> list[str]:
        """The topics of the pipeline's events, every one of which the audit sink records."""
        return [
            self.submitted,
            self.scored,
            self.routed,
            self.decisions,
            self.feedback,
            self.control,
            self.deadletter,
        ]


async def ensure_topics(
    bootstrap_servers: str,
    topics: Topics,
    partitions: int = 3,
    replication_factor: int = 1,
    task_retention_ms: int = TASK_RETENTION_MS,
) -> list[str]:
    """Create the missing topics; return the names created. Every topic has the same number of
    partitions: the router's changelog follows the scored topic partition by partition."""
    admin = AIOKafkaAdminClient(**clients.aiokafka_admin(bootstrap_servers))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = topics.configs(task_retention_ms)
        wanted = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=configs.get(name, {}),
            )
            for name in topics.all()
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
        # Metadata of fresh topics takes a moment to reach every listener.
        for _ in range(50):
            if set(topics.all()) <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        return [t.name for t in wanted]
    finally:
        await admin.close()


if __name__ == "__main__":
    # `python -m tandem_shared.topics`: create the topics from TANDEM_KAFKA_* (compose, Jobs).
    from tandem_shared.settings import KafkaSettings

    kafka = KafkaSettings()
    made = asyncio.run(
        ensure_topics(
            kafka.bootstrap_servers,
            Topics(kafka.topic_prefix),
            kafka.partitions,
            kafka.replication_factor,
            kafka.task_retention_ms,
        )
    )
    print(f"created: {', '.join(made) or 'nothing, all topics exist'}")
