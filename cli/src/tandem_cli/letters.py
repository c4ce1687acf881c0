"""Dead letters off their topic, and their originals back to where they came from: the work of
`tandem deadletter` (deadletter.py), apart from the command line.

A letter's payload may be cut (see ``tandem_shared.deadletters``), so a replay sends the original
record, read back from its origin topic, partition and offset: its bytes, key and headers exactly.
Only when retention has removed it, and the letter holds the whole payload, does the letter's copy
stand in for it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tandem_shared import clients
from tandem_shared.deadletters import PAYLOAD_CHARS
from tandem_shared.envelope import EnvelopeError, decode
from tandem_shared.events import DeadLetter, EventData
from tandem_shared.kafka import Consumed
from tandem_shared.reading import read_records
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics

LETTER_TYPES: dict[str, type[EventData]] = {"tandem.deadletter.recorded.v1": DeadLetter}
READ_TIMEOUT_S = 60.0
SHORT_ID = 8
# A record the broker took may be a little above the producer's default request limit (1 MiB).
MAX_REQUEST_BYTES = 8 * 1024 * 1024
CUT_MARK = "…[cut]"  # what tandem_shared.deadletters.cut ends a cut text with


class Refused(Exception):
    """The command cannot do what was asked; the message says why, on one line."""


@dataclass(frozen=True)
class Found:
    """A dead letter as the topic holds it: its event id and where it sits."""

    id: str
    letter: DeadLetter
    partition: int
    offset: int

    @property
    def origin(self) -> str:
        letter = self.letter
        return f"{letter.origin_topic}/{letter.origin_partition}/{letter.origin_offset}"


@dataclass(frozen=True)
class Filters:
    service: str | None = None
    origin_topic: str | None = None
    since: datetime | None = None

    def keep(self, letter: DeadLetter) -> bool:
        return (
            self.service in (None, letter.service)
            and self.origin_topic in (None, letter.origin_topic)
            and (self.since is None or letter.failed_at >= self.since)
        )


@dataclass(frozen=True)
class Original:
    """What a replay sends: a record's value, key and headers, and where they were read."""

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]
    source: str


# ---- reading ---------------------------------------------------------------------------------


def _consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    # Committed records only: a record of an aborted transaction was never sent, so it is
    # never shown or replayed.
    return AIOKafkaConsumer(**clients.aiokafka_reader(kafka.bootstrap_servers))


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    if topic not in await consumer.topics():
        raise Refused(f"the topic {topic} does not exist on this broker")
    # That answer is not the client's cached metadata, which may not know the topic yet.
    while not (found := consumer.partitions_for_topic(topic)):
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    return [TopicPartition(topic, p) for p in sorted(found)]


async def read_letters(kafka: KafkaSettings, filters: Filters) -> tuple[list[Found], int]:
    """The dead letters the topic holds now, each once, oldest failure first; and how many of
    its records are not dead letters."""
    found: dict[str, Found] = {}
    unreadable = 0

    def keep(record: Consumed) -> None:
        nonlocal unreadable
        try:
            event = decode(record.value, record.headers, LETTER_TYPES)
        except EnvelopeError:
            unreadable += 1
            return
        assert isinstance(event.data, DeadLetter)
        # A record redelivered after a crash is dead-lettered again, same id.
        if filters.keep(event.data) and event.id not in found:
            found[event.id] = Found(event.id, event.data, record.partition, record.offset)

    # A letter is written after it failed, so nothing before ``since`` can match.
    topic = Topics(kafka.topic_prefix).deadletter
    await read_records(kafka.bootstrap_servers, topic, keep, since=filters.since)
    return sorted(found.values(), key=lambda f: (f.letter.failed_at, f.id)), unreadable


def choose(letters: Sequence[Found], wanted: str) -> Found:
    """The letter a user means: its event id, a unique start of it, or its origin
    (``topic/partition/offset``)."""
    if "/" in wanted:
        matches = [f for f in letters if f.origin == wanted]
    else:
        matches = [f for f in letters if f.id.startswith(wanted.lower())]
    if not matches:
        raise Refused(f"no dead letter {wanted!r} on the dead-letter topic")
    if len({f.id for f in matches}) > 1:
        raise Refused(f"{wanted!r} matches {len(matches)} dead letters: give more of the id")
    return matches[0]


# ---- replaying -------------------------------------------------------------------------------


async def fetch_original(consumer: AIOKafkaConsumer, letter: DeadLetter) -> Original | None:
    """The record at the letter's origin, if it is still there and is the one that failed."""
    tp = TopicPartition(letter.origin_topic, letter.origin_partition)
    if tp not in await _partitions(consumer, letter.origin_topic):
        return None
    consumer.assign([tp])
    first = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    if not first <= letter.origin_offset < end:
        return None  # removed by retention (or the topic was made again)
    consumer.seek(tp, letter.origin_offset)
    while await consumer.position(tp) < end:
        records = (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp, [])
        if not records:
            continue
        record = records[0]
        if record.offset != letter.origin_offset:
            return None  # compacted away, or part of an aborted transaction
        if letter.payload_sha256 not in (None, _sha256(record.value)):
            return None  # another record at that place: the topic was made again
        source = f"the original at {letter.origin_topic}/{tp.partition}/{record.offset}"
        return Original(record.value, record.key, list(record.headers), source)
    return None


def from_letter(letter: DeadLetter) -> Original:
    """The letter's own copy, when it is the whole original; else Refused, saying why."""
    if letter.payload_truncated:
        raise Refused(
            f"the original is gone and the letter holds only the first {PAYLOAD_CHARS} "
            f"characters of its {letter.payload_size} bytes"
        )
    value = letter.payload.encode()
    if letter.payload_sha256 not in (None, _sha256(value)):
        raise Refused("the original is gone and the letter's copy differs (it was not UTF-8)")
    headers = [(k, v.encode()) for k, v in letter.headers.items() if k != "…"]
    key = letter.origin_key.encode() if letter.origin_key is not None else None
    notes = ["the original is gone"]
    if not letter.payload_sha256:
        notes.append("unchecked: the letter has no hash")
    if "…" in letter.headers or any(v.endswith(CUT_MARK) for v in letter.headers.values()):
        notes.append("some headers were cut")
    return Original(value, key, headers, f"the letter's copy ({'; '.join(notes)})")


def _sha256(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()


async def replay(
    kafka: KafkaSettings, chosen: Sequence[Found], dry_run: bool
) -> tuple[list[str], list[str]]:
    """Send each chosen letter's original back to its origin; lines saying what was replayed,
    and lines saying what was refused."""
    done: list[str] = []
    refused: list[str] = []
    consumer = _consumer(kafka)
    producer = AIOKafkaProducer(
        **clients.aiokafka_producer(kafka, "tandem-cli-replay"),
        max_request_size=MAX_REQUEST_BYTES,
    )
    try:
        await consumer.start()
        if not dry_run:
            await producer.start()
        for found in _one_per_origin(chosen):
            name = f"{found.id[:SHORT_ID]} {found.origin}"
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    original = await fetch_original(consumer, found.letter)
                record = original or from_letter(found.letter)
            except Refused as exc:
                refused.append(f"refused {name}: {exc}")
                continue
            except TimeoutError:
                refused.append(f"refused {name}: its origin could not be read in time")
                continue
            size = len(record.value) if record.value is not None else 0
            if dry_run:
                done.append(f"would replay {name}: {size} bytes from {record.source}")
                continue
            sent = await producer.send_and_wait(
                found.letter.origin_topic,
                record.value,
                key=record.key,
                headers=record.headers,
                # The partition it came from keeps it in order with its task's other records.
                partition=found.letter.origin_partition,
            )
            where = f"{sent.topic}/{sent.partition}/{sent.offset}"
            done.append(f"replayed {name} -> {where}: {size} bytes from {record.source}")
    finally:
        await consumer.stop()
        if not dry_run:
            await producer.stop()
    return done, refused


def _one_per_origin(chosen: Sequence[Found]) -> Iterator[Found]:
    seen: set[str] = set()
    for found in chosen:
        if found.origin not in seen:
            seen.add(found.origin)
            yield found
