"""Request bodies are bounded before anything reads them: a body over the size limit gets 413
and a JSON body nested deeper than the depth limit 400, before parsing, authentication or any
route runs. A 40 MB body would otherwise be parsed whole (and held several times over) by
whoever asked, token or not."""

from __future__ import annotations

import itertools
import json
import re
from typing import Annotated

from fastapi import Path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# An id in a URL: printable, and as long as ids are, so a NUL or a megabyte never reaches a
# query (PostgreSQL refuses NUL with an error, not a miss). Task ids may hold "/" in the
# audit API's paths, which take the rest of the path.
TaskIdParam = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
ReviewIdParam = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nests_deeper(body: bytes, limit: int) -> bool:
    """Whether the JSON text nests its arrays and objects deeper than ``limit`` (brackets
    inside strings do not count). Text that is not JSON is left to its parser to refuse."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False  # too few to nest that deep: the common case, decided in C
    return max(itertools.accumulate(_STEP[b] for b in brackets)) > limit


class BodyLimits:
    """ASGI middleware: at most ``max_bytes`` of request body, JSON at most ``max_depth`` deep."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _refuse(send, 413, self._too_large())
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:  # sent without a length, or more than it said
                await _refuse(send, 413, self._too_large())
                return
        if nests_deeper(bytes(body), self.max_depth):
            await _refuse(send, 400, f"the JSON body nests deeper than {self.max_depth} levels")
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, read already; then what the client sends (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(send: Send, status: int, detail: str) -> None:
    content = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
