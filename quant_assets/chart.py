"""A price-and-volume chart as PNG bytes, drawn with numpy and written with zlib.

matplotlib cost about a second per process (import, font cache, first render) for a picture
that only has to show the shape of one symbol's day; the axes' values go into the caption the
caller writes next to the image.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

WIDTH, PRICE_HEIGHT, VOLUME_HEIGHT, GAP = 480, 120, 36, 4
# Palette indices: background, price line, volume, separator.
PALETTE = bytes([255, 255, 255, 31, 119, 180, 160, 174, 196, 225, 225, 225])


def price_volume_png(ts_ms: np.ndarray, close: np.ndarray, volume: np.ndarray) -> bytes:
    """Close as a line over time (top), volume per pixel column (bottom); ``ts_ms`` ascending."""
    height = PRICE_HEIGHT + GAP + VOLUME_HEIGHT
    image = np.zeros((height, WIDTH), dtype=np.uint8)
    image[PRICE_HEIGHT + GAP // 2, :] = 3
    if ts_ms.size:
        span = max(int(ts_ms[-1] - ts_ms[0]), 1)
        x = ((ts_ms - ts_ms[0]) * (WIDTH - 1) // span).astype(np.intp)
        _draw_line(image, x, ts_ms, close)
        per_column = np.bincount(x, weights=volume, minlength=WIDTH)
        bars = np.rint(per_column / max(per_column.max(), 1e-12) * VOLUME_HEIGHT).astype(np.intp)
        rows = np.arange(VOLUME_HEIGHT)[:, None]
        image[height - VOLUME_HEIGHT :][rows >= VOLUME_HEIGHT - bars[None, :]] = 2
    return _png(image)


def _draw_line(image: np.ndarray, x: np.ndarray, ts_ms: np.ndarray, close: np.ndarray) -> None:
    low, high = float(close.min()), float(close.max())
    y = (high - close) / ((high - low) or 1.0) * (PRICE_HEIGHT - 1)
    columns = np.arange(WIDTH)
    occupied = np.unique(x)
    # Per column: the extremes of its own points, joined to the line's value at the neighbouring
    # columns so that sparse minutes (pre/post market) still draw as one connected line.
    starts = np.searchsorted(x, occupied)
    top = np.full(WIDTH, np.inf)
    bottom = np.full(WIDTH, -np.inf)
    top[occupied] = np.minimum.reduceat(y, starts)
    bottom[occupied] = np.maximum.reduceat(y, starts)
    times = ts_ms[0] + columns * (ts_ms[-1] - ts_ms[0]) / (WIDTH - 1)
    along = np.interp(times, ts_ms, y)
    before = np.concatenate([along[:1], along[:-1]])
    top = np.minimum(np.minimum(top, along), before)
    bottom = np.maximum(np.maximum(bottom, along), before)
    rows = np.arange(PRICE_HEIGHT)[:, None]
    line = (rows >= np.floor(top)[None, :]) & (rows <= np.ceil(bottom)[None, :])
    image[:PRICE_HEIGHT][line] = 1


def _png(indices: np.ndarray, palette: bytes = PALETTE) -> bytes:
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
    (missed > extra > complete > archive only > none) so that a single lost minute shows."""
    rows, minutes = states.shape
    per = max(1, minutes // COVERAGE_WIDTH)
    rank = np.array([0, 1, 2, 4, 3], dtype=np.uint8)  # severity of each state
    unrank = np.argsort(rank).astype(np.uint8)
    worst = rank[states[:, : per * (minutes // per)]].reshape(rows, -1, per).max(axis=2)
    strips = np.repeat(unrank[worst], COVERAGE_ROW - 1, axis=0).reshape(rows, COVERAGE_ROW - 1, -1)
    separator = np.full((rows, 1, strips.shape[2]), 5, dtype=np.uint8)
    image = np.concatenate([strips, separator], axis=1).reshape(-1, strips.shape[2])
    return _png(image, COVERAGE_PALETTE)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
