"""The overview (`GET /`, the console's first page): per destination x segment a small chart of
the list's size against the segment's over the last runs (inline SVG drawn from classes only,
with a text alternative), the last run and the next refresh, and what is failing now, each
linked to its run. The numbers come from `exporter.admin.overview`; the next refresh from the
app setting `REFRESH_SCHEDULE` (the timer's schedule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from exporter.admin.overview import PairOverview, Point, overview
from exporter.console.context import Context
from exporter.console.http import Response
from exporter.console.router import route

WIDTH: Final = 220
HEIGHT: Final = 64
PAD: Final = 6


@dataclass(frozen=True, slots=True)
class Dot:
    x: float
    y: float
    kind: str
    """`segment` or `list`."""
    bad: bool
    """The run failed (its dot is marked)."""


@dataclass(frozen=True, slots=True)
class Chart:
    """A pair's sizes as SVG shapes (coordinates only: the look is in runs.css)."""

    segment_line: str
    """`points` of the segment's polyline (empty with fewer than two runs)."""
    list_lines: list[str]
    """`points` of the list's polylines: a run whose count is unknown breaks the line."""
    dots: list[Dot]
    top: int
    """The largest size shown (the chart's top)."""
    label: str
    """The text alternative: what the chart shows, in words."""


def chart(points: list[Point]) -> Chart | None:
    """The chart of a pair's runs (oldest first), or None without any."""
    if not points:
        return None
    values = [p.segment_size for p in points] + [p.list_size or 0 for p in points]
    top = max(1, *values)
    span = WIDTH - 2 * PAD
    step = span / (len(points) - 1) if len(points) > 1 else 0.0

    def xy(index: int, value: int) -> tuple[float, float]:
        x = PAD + index * step if len(points) > 1 else WIDTH / 2
        y = PAD + (1 - value / top) * (HEIGHT - 2 * PAD)
        return round(x, 1), round(y, 1)

    segment = [xy(i, p.segment_size) for i, p in enumerate(points)]
    lines: list[list[tuple[float, float]]] = [[]]
    dots = [
        Dot(x, y, "segment", p.state == "failed") for (x, y), p in zip(segment, points, strict=True)
    ]
    for i, p in enumerate(points):
        if p.list_size is None:
            lines.append([])
            continue
        x, y = xy(i, p.list_size)
        lines[-1].append((x, y))
        dots.append(Dot(x, y, "list", p.state == "failed"))
    return Chart(
        segment_line=_points(segment) if len(segment) > 1 else "",
        list_lines=[_points(line) for line in lines if len(line) > 1],
        dots=dots,
        top=top,
        label=_label(points),
    )


def _points(line: list[tuple[float, float]]) -> str:
    return " ".join(f"{x},{y}" for x, y in line)


def _label(points: list[Point]) -> str:
    last = points[-1]
    listed = "unknown" if last.list_size is None else f"{last.list_size:,}"
    runs = f"{len(points)} run{'s' if len(points) != 1 else ''}"
    return (
        f"List size against segment size over the last {runs}. The last run: the list holds "
        f"{listed}, the segment {last.segment_size:,} valid contacts."
    )


@route("GET", "/")
def overview_page(ctx: Context) -> Response:
    now = datetime.fromtimestamp(ctx.now, UTC) if ctx.now else datetime.now(UTC)
    schedule = ctx.settings.get("REFRESH_SCHEDULE")
    pairs: list[PairOverview] = overview(ctx.svc, schedule=schedule, now=now)
    failing = sum(len(p.problems) for p in pairs)
    return ctx.render(
        "overview.html",
        pairs=[(p, chart(p.points)) for p in pairs],
        failing=failing,
        schedule=schedule or "",
        width=WIDTH,
        height=HEIGHT,
        pad=PAD,
    )
