"""What a request carries, read as the OpenAPI document describes it. Pydantic's defaults are
laxer than the document: they take 0 for false, "5" for 5, a number of seconds for a time and
a time without its offset, so a client that breaks the contract would not hear about it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, TypeAdapter

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_AWARE: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
# Tandem holds nothing older than the epoch (nor do Kafka's timestamps); a time outside these
# is read as the nearer end, so that a window reaching past either still means what it says
# and arithmetic on it stays within what a datetime can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _rfc3339(value: object) -> object:
    # Parsed here, so that a body read in strict mode (where text is no datetime) takes it too.
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return _AWARE.validate_python(value)
    raise ValueError("not an RFC 3339 time with its offset, such as 2026-01-31T09:00:00Z")


def _in_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or year 9999, east or west of UTC
        return EARLIEST if value.year == 1 else LATEST
    return min(max(utc, EARLIEST), LATEST)


# A time in a query or a body: RFC 3339 with its offset, as UTC from 1970 on.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]
_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp)


def timestamp(text: str) -> datetime:
    """``text`` read as a Timestamp; ValueError when it is not one."""
    return _TIMESTAMP.validate_python(text)


def strict_json(model: type[BaseModel]) -> BeforeValidator:
    """A request body checked as the JSON it came as, in pydantic's strict mode (true is a
    boolean and 0 is not, "5" is not a number), which is what its JSON Schema says; then read
    as usual. The model itself (shared with Kafka, where events are read as written) stays as
    it is: ``Annotated[Model, strict_json(Model)]``."""
    adapter = TypeAdapter(model)

    def validate(value: object) -> object:
        if isinstance(value, dict):  # anything else the model refuses as it is
            adapter.validate_json(json.dumps(_integral(value)), strict=True)
        return value

    return BeforeValidator(validate)


def _integral(value: object) -> object:
    """``value`` with 5.0 as 5: JSON Schema counts it an integer, strict mode would not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value
