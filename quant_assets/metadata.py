"""Materialisation metadata a user would rather look at than query: counts, time range, a
markdown preview and a small PNG chart embedded in the markdown."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: runs inside Dagster workers
import dagster as dg
import matplotlib.pyplot as plt
import pyarrow as pa
import pyarrow.compute as pc


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
    """Close price and volume of one symbol's day as an inline PNG."""
    frame = bars.select(["ts", "close", "volume"]).to_pandas()
    frame["close"] = frame["close"].astype(float)
    frame["volume"] = frame["volume"].astype(float)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 3), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, dpi=80
    )
    top.plot(frame["ts"], frame["close"], linewidth=0.8)
    top.set_title(title, fontsize=9)
    top.tick_params(labelsize=7)
    # One polygon, not a Rectangle patch per minute (a bar chart of 960 minutes costs ~1 s).
    bottom.fill_between(frame["ts"], frame["volume"], step="post", linewidth=0)
    bottom.tick_params(labelsize=6)
    fig.autofmt_xdate()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
