"""The changelog of routed task ids: written in each batch's transaction, read back when the
group assigns a partition. Partition N of the changelog holds the ids routed from partition N
of the scored topic, so a member loads exactly the partitions it was given."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from tandem_shared import clients
from tandem_shared.kafka import Record
from tandem_shared.settings import KafkaSettings

from tandem_router.dedupe import SeenTasks

log = logging.getLogger(__name__)


def entry(topic: str, task_id: str, partition: int, offset: int) -> Record:
    """The changelog record of a routing: on the input's partition number, keyed by task id
    (compaction keeps the last per id), the offset of the record that routed it as value."""
    return Record(topic, task_id.encode(), str(offset).encode(), [], partition=partition)


class SeenLog:
    """Loads a partition's memory from the changelog on assignment (see PartitionState)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        input_topic: str,
        changelog: str,
        seen: SeenTasks,
        timeout_s: float = 60.0,
    ) -> None:
        self.kafka = kafka
        self.input_topic = input_topic
        self.changelog = changelog
        self.seen = seen
        self.timeout_s = timeout_s

    def assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        numbers = [p for topic, p in partitions if topic == self.input_topic]
        if not numbers:
            return
        started = time.monotonic()
        loaded = self._read(numbers)
        for partition in numbers:
            self.seen.load(partition, loaded.get(partition, []))
        log.info(
            "loaded %d routed task ids of partitions %s in %.2f s",
            sum(len(v) for v in loaded.values()),
            numbers,
            time.monotonic() - started,
        )

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            if topic == self.input_topic:
                self.seen.forget(partition)

    def _read(self, numbers: list[int]) -> dict[int, list[tuple[str, int, float]]]:
        """Every committed entry of the partitions, to their end as it is now. Retried until
        ``timeout_s``, then raised: the loop ends rather than route without its memory."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return dict(_read_partitions(self.kafka, self.changelog, numbers, deadline))
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("reading %s failed; trying again: %s", self.changelog, exc)
                time.sleep(1.0)


def _read_partitions(
    kafka: KafkaSettings, topic: str, numbers: list[int], deadline: float
) -> Iterator[tuple[int, list[tuple[str, int, float]]]]:
    consumer = Consumer(clients.state_reader(kafka))
    try:
        ends: dict[int, int] = {}
        for p in numbers:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if not ends:
            yield from ((p, []) for p in numbers)
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        entries: dict[int, list[tuple[str, int, float]]] = {p: [] for p in numbers}
        pending = set(ends)
        while pending:
            if time.monotonic() > deadline:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {topic}"))
            for m in consumer.consume(1000, 0.5):
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition() or 0)
                        continue
                    raise KafkaException(error)
                parsed = _parse(m.key(), m.value())
                if parsed is not None:
                    task_id, offset = parsed
                    entries[m.partition() or 0].append((task_id, offset, m.timestamp()[1] / 1000))
        yield from entries.items()
    finally:
        consumer.close()


def _parse(key: bytes | None, value: bytes | None) -> tuple[str, int] | None:
    """A changelog entry, or None for a record no router wrote (skipped, not trusted)."""
    if key is None or value is None:
        return None
    try:
        return key.decode(), int(value)
    except ValueError:
        return None
