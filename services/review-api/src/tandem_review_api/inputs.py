"""What a request body carries, read as the OpenAPI document describes it. Pydantic's defaults
are laxer than the document: they take 0 for false and "5" for 5, so a client that breaks the
contract would not hear about it. (Times: tandem_shared.times.)"""

from __future__ import annotations

import json

from pydantic import BaseModel, BeforeValidator, TypeAdapter


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
