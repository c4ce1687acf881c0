"""Small inline SVG charts for a self-contained HTML report: lines over days, and bars, each a
<figure> under its caption. Pure: numbers in, markup out (escaped), no script, nothing fetched."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 36
COLOURS = ("#1f5fa8", "#c2410c", "#15803d", "#7e22ce", "#b45309", "#0e7490")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[float | None]  # one per x label; None: no value that day
    # Optional interval per point, drawn as a whisker (a QA accuracy's 95% interval).
    intervals: Sequence[tuple[float, float] | None] = ()


def line_chart(
    title: str, labels: Sequence[str], series: Sequence[Series], share: bool = True
) -> str:
    """Lines over ``labels`` (days). ``share``: the y axis is 0 to 100%; otherwise 0 to the
    largest value."""
    values = [v for s in series for v in s.points if v is not None]
    top = 1.0 if share else max(values, default=1.0) or 1.0
    parts = [_frame(title, top, share)]
    step = (WIDTH - LEFT - RIGHT) / max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return LEFT + i * step

    def y(v: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - v / top)

    for n, s in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.points) if v is not None)
        if points:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
            )
        for i, v in enumerate(s.points):
            if v is not None:
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
        for i, interval in enumerate(s.intervals):
            if interval is not None:
                low, high = interval
                parts.append(
                    f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" '
                    f'stroke="{colour}" stroke-opacity="0.5"/>'
                )
    parts.append(_x_labels(labels, x))
    parts.append(_legend([s.name for s in series]))
    return _svg(title, parts)


def bar_chart(
    title: str, bars: Mapping[str, float], share: bool = True, mark: float | None = None
) -> str:
    """One bar per key; ``mark``: a dashed line across (the whole's rate, for segments)."""
    top = 1.0 if share else max(bars.values(), default=1.0) or 1.0
    parts = [_frame(title, top, share)]
    width = (WIDTH - LEFT - RIGHT) / max(len(bars), 1)
    span = HEIGHT - TOP - BOTTOM
    for i, (name, value) in enumerate(bars.items()):
        high = span * value / top
        left = LEFT + i * width + width * 0.15
        parts.append(
            f'<rect x="{left:.1f}" y="{TOP + span - high:.1f}" width="{width * 0.7:.1f}" '
            f'height="{high:.1f}" fill="{COLOURS[0]}"><title>{escape(name)}: '
            f"{_tick(value, share)}</title></rect>"
        )
        parts.append(
            f'<text x="{left + width * 0.35:.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="10" '
            f'text-anchor="middle">{escape(name)}</text>'
        )
    if mark is not None:
        at = TOP + span * (1 - mark / top)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{at:.1f}" y2="{at:.1f}" '
            'stroke="#444" stroke-dasharray="4 3"/>'
        )
    return _svg(title, parts)


def _frame(title: str, top: float, share: bool) -> str:
    bottom = HEIGHT - BOTTOM
    ticks = "".join(
        f'<text x="{LEFT - 6}" y="{TOP + (bottom - TOP) * (1 - f) + 4:.1f}" font-size="10" '
        f'text-anchor="end">{_tick(top * f, share)}</text>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + (bottom - TOP) * (1 - f):.1f}" '
        f'y2="{TOP + (bottom - TOP) * (1 - f):.1f}" stroke="#ddd"/>'
        for f in (0.0, 0.5, 1.0)
    )
    return f"<title>{escape(title)}</title>{ticks}"


def _x_labels(labels: Sequence[str], x: Callable[[int], float]) -> str:
    """About eight of the labels, a day shown as its month and day."""
    every = max(1, len(labels) // 8)
    return "".join(
        f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="10" '
        f'text-anchor="middle">{escape(label[5:] if len(label) == 10 else label)}</text>'
        for i, label in enumerate(labels)
        if i % every == 0
    )


def _legend(names: Sequence[str]) -> str:
    return "".join(
        f'<rect x="{LEFT + 150 * n}" y="{HEIGHT - 14}" width="10" height="10" '
        f'fill="{COLOURS[n % len(COLOURS)]}"/>'
        f'<text x="{LEFT + 150 * n + 14}" y="{HEIGHT - 5}" font-size="11">{escape(name)}</text>'
        for n, name in enumerate(names)
    )


def _tick(value: float, share: bool) -> str:
    return f"{value:.0%}" if share else f"{value:,.3g}"


def _svg(title: str, parts: Sequence[str]) -> str:
    """The chart under its title, as a figure of the page."""
    return (
        f"<figure><figcaption>{escape(title)}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">'
        + "".join(parts)
        + "</svg></figure>"
    )
