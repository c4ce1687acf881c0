"""Prometheus metrics and OpenTelemetry tracing, set up once per process and passed in."""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tandem_shared.envelope import Headers

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)


Metric = TypeVar("Metric", Counter, Gauge, Histogram)


def children(metric: Metric) -> Callable[..., Metric]:
    """A metric's labelled children, each looked up once: on the per-record path ``labels()``
    costs more than the observation itself. Labels are low-cardinality, so the cache stays small."""
    cache: dict[tuple[str, ...], Metric] = {}

    def child(*labels: str) -> Metric:
        found = cache.get(labels)
        if found is None:
            found = cache[labels] = metric.labels(*labels)
        return found

    return child


def observe_all(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for each amount, as one update: observed one by one, a batch's
    values cost a lock and a scan of the buckets each. Reaches into the client's buckets, so a
    histogram without them (another client version) is observed one by one."""
    bounds: list[float] | None = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    summed = 0.0
    for amount in amounts:
        summed += amount
        if amount == amount:  # NaN is in no bucket, as observe leaves it
            counts[bisect.bisect_left(bounds, amount)] += 1
    total.inc(summed)
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


class PipelineMetrics:
    """The metrics every consuming service exports; labels stay low-cardinality."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        self.registry = registry
        self.processed = Counter(
            "tandem_messages_processed",
            "Records handled successfully.",
            ["service", "topic"],
            registry=registry,
        )
        self.failed = Counter(
            "tandem_messages_failed",
            "Handler attempts that raised.",
            ["service", "topic", "error_type"],
            registry=registry,
        )
        self.deadlettered = Counter(
            "tandem_deadletters",
            "Records sent to the dead-letter topic.",
            ["service", "topic"],
            registry=registry,
        )
        self.control_refused = Counter(
            "tandem_control_refused",
            "Control changes not followed: unsigned, signed by an unknown key or badly, by a "
            "key not trusted for their kind, or dated ahead.",
            ["service", "reason"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "tandem_batch_processing_seconds",
            "Time from handling a transaction's first batch to its commit (one batch when "
            "caught up).",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "tandem_batch_size_records",
            "Records per consumed batch.",
            ["service"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.end_to_end = Histogram(
            "tandem_event_age_seconds",
            "Age of an event (now minus ce_time) when handled.",
            ["service", "topic"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.processed_child = children(self.processed)
        self.end_to_end_child = children(self.end_to_end)
        self.lag = Gauge(
            "tandem_consumer_lag_records",
            "Records past the group's committed offset, to the end of the partition.",
            ["service", "topic", "partition"],
            registry=registry,
        )
        self.committed = Counter(
            "tandem_consumer_committed_records",
            "Records whose offsets the consumer group committed: the loop's progress.",
            ["service", "topic"],
            registry=registry,
        )
        self.transactions = Counter(
            "tandem_consumer_transactions",
            "Kafka transactions of the consumer loop, by outcome: committed, or aborted (their "
            "batches are handled again).",
            ["service", "outcome"],
            registry=registry,
        )
        self.loop_running = Gauge(
            "tandem_consumer_loop_running",
            "1 while the consumer loop runs; 0 once it stopped (the service is then unhealthy).",
            ["service", "group"],
            registry=registry,
        )


def setup_tracing(service: str) -> trace.Tracer:
    """A tracer for the service; spans go to OTLP when the standard OTEL_* variables say so.

    Kafka spans are made by the consume loop (one process span per record, continuing the
    record's trace) and the Publisher (which injects the context into what it sends), not by
    the aiokafka instrumentation: its per-record receive spans cost a tenth of the loop's time
    and repeat what the process span says. With no exporter configured no SDK is installed:
    spans nobody receives are not made, and ``continue_trace`` passes the trace context on."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider) and _exporting():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    return trace.get_tracer(f"tandem.{service}")


def _exporting() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def continue_trace(tracer: trace.Tracer, name: str, parent: Context, **options: Any) -> Any:
    """A context manager: a span ``name`` under ``parent`` when spans are recorded; else the
    parent itself made current, so what is published inside carries the caller's trace on."""
    if recording():
        return tracer.start_as_current_span(name, context=parent, **options)
    return attached(parent)


# W3C trace context headers, passed on unchanged when this process makes no spans.
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
# Longer than a valid one ever is (a traceparent is 55 bytes; a tracestate is cut at 512 by
# the W3C's own rule): not passed on, so a hostile header cannot grow every output after it.
TRACE_HEADER_BYTES = 512
_carried: ContextVar[list[tuple[str, bytes]] | None] = ContextVar("carried", default=None)


class carried:  # noqa: N801 - used as a function, like contextlib's managers
    """Within: what is sent carries these headers' trace context on, as it came in. A class,
    not a generator: it is entered for every record a service handles."""

    __slots__ = ("_headers", "_token")

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def __enter__(self) -> None:
        kept: dict[str, bytes] = {}  # the first of each, if it can be a valid one
        for k, v in self._headers:
            if k in TRACE_HEADERS and k not in kept and v and len(v) <= TRACE_HEADER_BYTES:
                kept[k] = v
        self._token = _carried.set(list(kept.items()))

    def __exit__(self, *_: object) -> None:
        _carried.reset(self._token)


def trace_headers() -> list[tuple[str, bytes]]:
    """The headers that carry the current trace into an outgoing record."""
    passed = _carried.get()
    if passed is not None:
        return passed
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def recording() -> bool:
    """Whether spans are made at all (an exporter is configured)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


@contextmanager
def attached(parent: Context) -> Iterator[None]:
    """``parent`` is the current context within: what is sent inside continues its trace."""
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


class _HeaderGetter(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = [v.decode("utf-8", "replace") for k, v in carrier if k == key and v is not None]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _HeaderGetter()


def context_from_headers(headers: Headers | None) -> Context:
    """The trace context a record carries (W3C traceparent), for its processing span."""
    return propagate.extract(tuple(headers or ()), getter=_GETTER)


def context_from_traceparent(traceparent: str | None) -> Context:
    return propagate.extract({"traceparent": traceparent} if traceparent else {})


class CallerTrace:
    """ASGI middleware for when no spans are made (no exporter): the caller's W3C trace context
    is made current for the request, so what it publishes carries the caller's trace on, as
    with the FastAPI instrumentation, without the instrumentation's work for a span nobody
    receives (matching the route a second time, collecting its attributes): about a sixth of
    a review API request's CPU."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = [(k.decode("latin-1"), v) for k, v in scope["headers"] if k in _TRACE_KEYS]
        if not carrier:
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(propagate.extract(carrier, getter=_GETTER))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


_TRACE_KEYS = frozenset(key.encode() for key in TRACE_HEADERS)


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Telemetry must never break the message path: log and carry on."""
    try:
        yield
    except Exception:
        log.warning("telemetry failed: %s", what, exc_info=True)
