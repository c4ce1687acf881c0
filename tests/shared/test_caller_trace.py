"""With no exporter no HTTP spans are made, yet a request runs in its caller's trace: what it
publishes carries the caller's traceparent on (tandem_shared.telemetry.CallerTrace)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from tandem_shared.telemetry import CallerTrace, trace_headers

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def app() -> FastAPI:
    app = FastAPI()

    @app.get("/trace")
    async def current() -> dict[str, object]:
        context = trace.get_current_span().get_span_context()
        sent = {k: v.decode() for k, v in trace_headers()}
        return {"trace_id": format(context.trace_id, "032x"), "sent": sent}

    app.add_middleware(CallerTrace)
    return app


async def get(headers: dict[str, str]) -> dict[str, object]:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/trace", headers=headers)
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


async def test_a_request_runs_in_its_callers_trace_and_publishes_it_on() -> None:
    body = await get({"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    assert body["trace_id"] == TRACE_ID
    assert body["sent"] == {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}


async def test_without_a_caller_trace_there_is_none_to_carry() -> None:
    body = await get({})
    assert body["trace_id"] == "0" * 32
    assert body["sent"] == {}


async def test_a_malformed_traceparent_is_ignored() -> None:
    body = await get({"traceparent": "00-not-a-trace-01"})
    assert body["trace_id"] == "0" * 32
    assert body["sent"] == {}


async def test_the_callers_trace_ends_with_its_request() -> None:
    await get({"traceparent": TRACEPARENT})
    assert not trace.get_current_span().get_span_context().is_valid
