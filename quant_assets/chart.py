"""Small line charts as SVG ``data:`` URIs, for markdown metadata that Dagster shows inline.

The Dagster UI renders a markdown metadata value in place only while it is shorter than 1,000
characters (longer ones hide behind "[Show Markdown]"), so a chart here is a handful of
polylines with integer coordinates, thinned until the URI fits the budget the caller gives.
No axes: the caller writes the ranges as text next to the picture.
"""

from __future__ import annotations

import struct
import zlib
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


# Coverage states, in palette order: no trades, archive only (no live session then), live
# complete, live missed trades, live has trades the archive lacks.
COVERAGE_STATES = ("none", "archive only", "live complete", "live missed", "live extra")
COVERAGE_PALETTE = bytes(
    [255, 255, 255, 215, 215, 215, 44, 160, 44, 214, 39, 40, 255, 127, 14, 120, 120, 120]
)
COVERAGE_ROW, COVERAGE_WIDTH = 10, 480


def coverage_png(states: np.ndarray) -> bytes:
    """One strip per row of ``states`` (rows x 1440 minutes, values indexing
    ``COVERAGE_STATES``), 3 minutes per pixel; a pixel shows the worst state of its minutes
    (missed > extra > complete > archive only > none) so that a single lost minute shows.
    A palette PNG rather than SVG: a day of minute cells would not fit an inline SVG."""
    rows, minutes = states.shape
    per = max(1, minutes // COVERAGE_WIDTH)
    rank = np.array([0, 1, 2, 4, 3], dtype=np.uint8)  # severity of each state
    unrank = np.argsort(rank).astype(np.uint8)
    worst = rank[states[:, : per * (minutes // per)]].reshape(rows, -1, per).max(axis=2)
    strips = np.repeat(unrank[worst], COVERAGE_ROW - 1, axis=0).reshape(rows, COVERAGE_ROW - 1, -1)
    separator = np.full((rows, 1, strips.shape[2]), 5, dtype=np.uint8)
    image = np.concatenate([strips, separator], axis=1).reshape(-1, strips.shape[2])
    return _png(image, COVERAGE_PALETTE)


def _png(indices: np.ndarray, palette: bytes) -> bytes:
    """8-bit palette PNG: each row prefixed by filter type 0, one IDAT."""
    height, width = indices.shape
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), indices]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"PLTE", palette)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
