"""Materialisation metadata a user would rather look at than query: counts, time range, a
markdown preview and a small PNG chart embedded in the markdown."""

from __future__ import annotations

import base64

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from quant_assets.chart import price_volume_png


def frame_summary(table: pa.Table, ts_column: str = "ts") -> dict[str, dg.MetadataValue]:
    meta: dict[str, dg.MetadataValue] = {"rows": dg.MetadataValue.int(table.num_rows)}
    if "symbol" in table.column_names:
        meta["symbols"] = dg.MetadataValue.int(len(pc.unique(table.column("symbol"))))
    if table.num_rows:
        lo, hi = pc.min_max(table.column(ts_column)).values()
        meta["first_ts"] = dg.MetadataValue.text(lo.as_py().isoformat())
        meta["last_ts"] = dg.MetadataValue.text(hi.as_py().isoformat())
        meta["preview"] = dg.MetadataValue.md(
            table.slice(0, 8).to_pandas().to_markdown(index=False)
        )
    return meta


def price_chart(bars: pa.Table, title: str) -> dg.MetadataValue:
    """Close price and volume of one symbol's day (rows in time order) as an inline PNG, with
    the ranges the picture has no axes for written under it."""
    ts = bars.column("ts")
    ts_ms = pc.cast(ts, pa.int64()).to_numpy()
    close = pc.cast(bars.column("close"), pa.float64()).to_numpy()
    volume = pc.cast(bars.column("volume"), pa.float64()).to_numpy()
    encoded = base64.b64encode(price_volume_png(ts_ms, close, volume)).decode()
    first, last = ts[0].as_py(), ts[-1].as_py()
    caption = (
        f"{first:%H:%M}-{last:%H:%M} UTC · close {close.min():g}-{close.max():g} "
        f"(last {close[-1]:g}) · volume {volume.sum():,.0f}"
    )
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})\n\n{caption}")
