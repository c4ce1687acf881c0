"""How deep a JSON body nests, told without parsing it."""

from __future__ import annotations

import pytest
from tandem_shared.limits import nests_deeper


@pytest.mark.parametrize(
    ("body", "deeper"),
    [
        (b'{"a": [1, 2, {"b": 3}]}', False),  # 3 levels
        (b"[" * 32 + b"]" * 32, False),  # the limit itself
        (b"[" * 33 + b"]" * 33, True),
        (b'{"a": "' + b"[" * 100 + b'"}', False),  # brackets in a string are text
        (b'{"a": "\\"' + b"[" * 100 + b'"}', False),  # an escaped quote does not end it
        (b"[" * 40 + b'"x"' + b"]" * 40 + b"[]" * 1000, True),
        (b"[{}]" * 5000, False),  # many, shallow
        (b"[" * 40, True),  # unterminated and deep: refused before the parser sees it
        (b"not json at all", False),  # the parser says what is wrong
    ],
)
def test_depth(body: bytes, deeper: bool) -> None:
    assert nests_deeper(body, 32) is deeper
