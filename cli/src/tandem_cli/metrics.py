"""`tandem metrics`: the catalogue of every metric the services export, read off their
registries, so docs/metrics.md cannot drift from the code."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from prometheus_client import CollectorRegistry


@dataclass(frozen=True)
class Metric:
    name: str  # as exposed: counters with _total
    kind: str
    labels: tuple[str, ...]
    meaning: str
    services: tuple[str, ...]


def _service_apps() -> Iterator[tuple[str, Any]]:
    from tandem_audit_sink.app import create_app as audit_sink
    from tandem_review_api.app import create_app as review_api
    from tandem_router.app import create_app as router
    from tandem_scoring.app import create_app as scoring

    factories: list[tuple[str, Callable[[], Any]]] = [
        ("scoring", scoring),
        ("router", router),
        ("review-api", review_api),
        ("audit-sink", audit_sink),
    ]
    quiet = logging.getLogger("tandem_audit_sink.app")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # building the app only: no key warning for a catalogue
    try:
        for name, factory in factories:
            yield name, factory()
    finally:
        quiet.setLevel(level)


def _collectors(registry: CollectorRegistry) -> list[Any]:
    # The registry keeps its collectors privately; their names, types, labels and help are
    # what the exposition shows, without needing a sample of each.
    return list(registry._collector_to_names)


def catalogue() -> list[Metric]:
    found: dict[str, Metric] = {}
    for service, app in _service_apps():
        for collector in _collectors(app.state.runtime.registry):
            kind = str(collector._type)
            name = collector._name + ("_total" if kind == "counter" else "")
            known = found.get(name)
            services = (*known.services, service) if known else (service,)
            found[name] = Metric(
                name, kind, tuple(collector._labelnames), str(collector._documentation), services
            )
    return sorted(found.values(), key=lambda m: m.name)


def render(metrics: list[Metric]) -> str:
    lines = [
        "# Metrics",
        "",
        "Every metric the services export on `/metrics`, read off their registries by",
        "`uv run tandem metrics docs/metrics.md` (a test keeps this page and the code in step).",
        "Names follow the Prometheus rules: the `tandem_` prefix, base units (seconds), `_total`",
        "on counters. No label carries a task, event or review id.",
        "",
        "| metric | type | labels | services | meaning |",
        "|---|---|---|---|---|",
    ]
    for m in metrics:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "none"
        services = "all four" if len(m.services) == 4 else ", ".join(m.services)
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {services} | {m.meaning} |")
    lines += [
        "",
        "Histograms are exposed as `_bucket`, `_sum` and `_count` series. Every series also",
        'carries the labels the scrape adds (`job="tandem"` and the pod or instance).',
        "",
    ]
    return "\n".join(lines)


def metrics(
    output: Annotated[Path, typer.Argument(help="The Markdown file to write.")] = Path(
        "docs/metrics.md"
    ),
) -> None:
    """Write the metric catalogue (every metric, its type, labels and meaning)."""
    output.write_text(render(catalogue()))
    typer.echo(f"wrote {output}")
