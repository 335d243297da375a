"""Small line charts as SVG ``data:`` URIs, for markdown metadata that Dagster shows inline.

The Dagster UI renders a markdown metadata value in place only while it is shorter than 1,000
characters (longer ones hide behind "[Show Markdown]"), so a chart here is a handful of
polylines with integer coordinates, thinned until the URI fits the budget the caller gives.
No axes: the caller writes the ranges as text next to the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

WIDTH, HEIGHT = 300, 90
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
SHADE = "#e8eef6"  # the marked x range (e.g. the regular session)
BARS = "#a0aec4"


@dataclass(frozen=True)
class Series:
    """One line: ``x`` ascending, both in the caller's units (scaled to the box here)."""

    x: np.ndarray
    y: np.ndarray


def _thin(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` points, evenly spaced over the series, keeping first and last."""
    if x.size <= points:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, points).round().astype(np.intp))
    return x[keep], y[keep]


def _scale(values: np.ndarray, low: float, high: float, size: int, flip: bool) -> np.ndarray:
    span = (high - low) or 1.0
    pixels = (values - low) / span * (size - 1)
    return np.rint(size - 1 - pixels if flip else pixels).astype(np.int64)


def line_chart_svg(
    lines: list[Series],
    *,
    points: int = 60,
    shade: tuple[float, float] | None = None,
    bars: Series | None = None,
    bar_height: int = 24,
    buckets: int = 30,
) -> str:
    """Lines (one colour each, COLOURS order) over one shared x range, optionally an x range
    shaded behind them and bars (e.g. volume, summed into ``buckets``) along the bottom; each
    line is thinned to ``points``."""
    xs = np.concatenate([s.x for s in lines] + ([bars.x] if bars else []))
    x_low, x_high = float(xs.min()), float(xs.max())
    ys = np.concatenate([s.y for s in lines])
    y_low, y_high = float(ys.min()), float(ys.max())
    line_height = HEIGHT - (bar_height + 2 if bars else 0)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}'>"]
    if shade is not None:
        left, right = _scale(np.array(shade, dtype=float), x_low, x_high, WIDTH, False)
        left, right = max(int(left), 0), min(int(right), WIDTH - 1)
        if right > left:
            parts.append(
                f"<rect x='{left}' width='{right - left}' height='{HEIGHT}' fill='{SHADE}'/>"
            )
    if bars is not None and bars.x.size:
        # Bars summed per pixel bucket, so thinning never hides volume.
        bucket = _scale(bars.x, x_low, x_high, buckets, False)
        totals = np.bincount(bucket, weights=bars.y, minlength=buckets)
        heights = _scale(totals, 0.0, float(totals.max()), bar_height, False)
        step = WIDTH / buckets
        path = "".join(
            f"M{round(i * step + step / 2)},{HEIGHT}v-{h}" for i, h in enumerate(heights) if h
        )
        width = max(1, round(step) - 1)
        parts.append(f"<path d='{path}' stroke='{BARS}' stroke-width='{width}'/>")
    for colour, series in zip(COLOURS, lines, strict=False):
        x, y = _thin(series.x, series.y, points)
        px = _scale(x, x_low, x_high, WIDTH, False)
        py = _scale(y, y_low, y_high, line_height - 4, True) + 2
        coords = ",".join(f"{a},{b}" for a, b in zip(px.tolist(), py.tolist(), strict=True))
        parts.append(f"<polyline points='{coords}' fill='none' stroke='{colour}'/>")
    parts.append("</svg>")
    return "".join(parts)


def svg_data_uri(svg: str) -> str:
    """Percent-encoded (shorter than base64 for SVG) and safe inside a markdown link."""
    return "data:image/svg+xml," + quote(svg, safe="=:/,.'-")


def fitted_chart_uri(draw, budget: int) -> str:
    """``draw(points)`` -> SVG, with the most points (60 down to 8) whose URI fits ``budget``
    characters."""
    for points in (60, 48, 36, 28, 20, 14, 8):
        uri = svg_data_uri(draw(points))
        if len(uri) <= budget:
            return uri
    return uri
