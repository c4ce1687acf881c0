"""Every record of every Tandem topic into the ledger: the audit trail drops nothing.

A record that is not a valid Tandem CloudEvent is kept as ``tandem.unparsed`` with its raw value,
instead of being dead-lettered; the offsets are committed only after the database commit.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import ConsumerRecord
from tandem_shared.db import unavailable_is_transient
from tandem_shared.envelope import EnvelopeError, Event, decode, event_id, header_map, utcnow
from tandem_shared.events import EVENT_TYPES, LedgerCheckpoint
from tandem_shared.kafka import Incoming, Outgoing, Result
from tandem_shared.signing import to_utc
from tandem_shared.telemetry import guarded

from tandem_audit_sink.checkpoint import Checkpoint
from tandem_audit_sink.ledger import UNPARSED_TYPE, AuditRecord, canonical_json, parse
from tandem_audit_sink.privacy import NO_REDACTION, Redactor
from tandem_audit_sink.shards import ShardedLedger
from tandem_audit_sink.telemetry import AuditMetrics

log = logging.getLogger(__name__)

MAX_ATTRIBUTE = 256  # longer ids, sources or subjects are not trusted as columns


def capture(record: ConsumerRecord[bytes, bytes], redact: Redactor = NO_REDACTION) -> AuditRecord:
    """The ledger's view of one record, with private fields hashed; never raises, whatever
    the record holds."""
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    try:
        event = decode(record.value, record.headers, EVENT_TYPES)
        # the data as sent (not as re-serialised), private fields hashed
        body = redact(parse(record.value or b""))
        for name, value in (
            ("ce_id", event.id),
            ("ce_source", event.source),
            ("ce_subject", event.subject),
        ):
            _check_attribute(name, value)
        canonical_json(body)
        event_time = to_utc(event.time)
    except EnvelopeError as exc:
        return _unparsed(record, key, str(exc), redact)
    except Exception as exc:  # noqa: BLE001 - hostile input (deep nesting, odd times) is kept raw
        return _unparsed(record, key, f"{type(exc).__name__}: {exc}", redact)
    return AuditRecord(
        event_id=event.id,
        event_type=event.type,
        source=event.source,
        subject=event.subject,
        event_time=event_time,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        data=body,
        headers=header_map(record.headers),
    )


def _check_attribute(name: str, value: str) -> None:
    if len(value) > MAX_ATTRIBUTE:
        raise ValueError(f"{name} is longer than {MAX_ATTRIBUTE} characters")
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character")


def _clean(value: str) -> str:
    return value.replace("\x00", "\ufffd")[:MAX_ATTRIBUTE]


def _unparsed(
    record: ConsumerRecord[bytes, bytes], key: str | None, reason: str, redact: Redactor
) -> AuditRecord:
    raw = record.value
    value: str | None = None
    encoding: str | None = None
    if raw is not None:
        try:
            value, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            value, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        if redact.fields and encoding == "utf-8":
            value = _redacted_text(value, redact)
    headers = header_map(record.headers)
    try:
        when = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        when = utcnow()
    origin = f"{record.topic}/{record.partition}/{record.offset}"
    return AuditRecord(
        event_id=event_id(origin, "unparsed"),
        event_type=UNPARSED_TYPE,
        source=_clean(headers.get("ce_source") or "unknown"),
        subject=_clean(key or ""),
        event_time=when,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        data={"reason": reason, "value": value, "encoding": encoding},
        headers=headers,
    )


def _redacted_text(value: str, redact: Redactor) -> str:
    """Raw JSON that is not an event may still hold private fields: hash them wherever they are
    (text that is not JSON has no fields to find)."""
    try:
        return canonical_json(redact(parse(value)))
    except (ValueError, RecursionError):
        return value


def checkpoint_event(checkpoint: Checkpoint, topic: str) -> Outgoing:
    data = LedgerCheckpoint.model_validate(checkpoint.document())
    stage = f"checkpoint/{checkpoint.tree_size}"
    event = Event.derived(data, source="audit-sink", subject=checkpoint.origin, stage=stage)
    return Outgoing(topic, event)


class AuditHandler:
    """Appends each consumed batch in one transaction; outputs the checkpoint it signed, if any."""

    def __init__(self, ledger: ShardedLedger, metrics: AuditMetrics, checkpoint_topic: str) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.checkpoint_topic = checkpoint_topic

    async def __call__(self, batch: Sequence[Incoming[AuditRecord]]) -> list[Result]:
        with unavailable_is_transient("ledger database"):
            result = await self.ledger.append([item.item for item in batch])
        with guarded("audit metrics"):
            self.metrics.appended(result)
        if result.duplicates:
            log.debug("%d event(s) already in the ledger", len(result.duplicates))
        for entry in result.conflicts:
            log.warning(
                "conflict: event %s from %s (task %s) was recorded at seq %d of shard %d with "
                "other content; this one is kept as seq %d there",
                entry.event_id,
                entry.source,
                entry.subject,
                entry.conflict_of,
                entry.shard,
                entry.seq,
            )
        outputs: list[Result] = [[] for _ in batch]
        if result.checkpoints and batch:
            outputs[-1] = [checkpoint_event(c, self.checkpoint_topic) for c in result.checkpoints]
        return outputs
