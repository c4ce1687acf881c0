"""Which entries an export takes: a time range of recording, event types, task types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from tandem_shared.signing import to_utc

from tandem_audit_sink.tables import ledger


@dataclass(frozen=True)
class ExportFilter:
    since: datetime | None = None
    until: datetime | None = None
    event_types: Sequence[str] = ()
    task_types: Sequence[str] = ()


def export_query(wanted: ExportFilter) -> Select[Any]:
    query = select(ledger)
    if wanted.since is not None:
        query = query.where(ledger.c.recorded_at >= to_utc(wanted.since))
    if wanted.until is not None:
        query = query.where(ledger.c.recorded_at < to_utc(wanted.until))
    if wanted.event_types:
        query = query.where(ledger.c.event_type.in_(list(wanted.event_types)))
    if wanted.task_types:
        query = query.where(ledger.c.task_type.in_(list(wanted.task_types)))
    return query
