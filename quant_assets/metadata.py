"""Materialisation and check metadata a user would rather look at than query: counts, time
range, a markdown preview of a representative slice, markdown tables and inline SVG charts.

Dagster shows a markdown value in place only while it is under 1,000 characters (longer ones
hide behind "[Show Markdown]"), so every markdown value built here is cut to ``MD_INLINE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_assets.chart import Series, fitted_chart_uri, line_chart_svg

MD_INLINE = 990
# Columns a preview shows, in this order, when the frame has them: what a reader checks first.
PREVIEW_COLUMNS = (
    "symbol",
    "ts",
    "expiry",
    "strike",
    "right",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "bid_price",
    "ask_price",
    "implied_volatility",
    "price",
    "size",
)


def cell(value: Any) -> str:
    """A value as a short table cell: decimals without trailing zeros, times to the minute."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return text
    if isinstance(value, datetime):
        return value.strftime("%H:%M" if value.second == 0 else "%H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    limit: int = MD_INLINE,
    empty: str = "none",
) -> str:
    """Rows as a markdown table of at most ``limit`` characters: rows that do not fit are
    dropped from the end and counted in a last line."""
    if not rows:
        return empty
    columns = list(columns or rows[0].keys())
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    body = ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    shown = len(body)
    while shown and len("\n".join(lines + body[:shown])) + 24 > limit:
        shown -= 1
    text = "\n".join(lines + body[:shown])
    if shown < len(body):
        text += f"\n\n… {len(body) - shown} more rows"
    return text


def representative_rows(table: pa.Table, per_symbol: int = 3, symbols: int = 4) -> pa.Table:
    """A slice a reader can judge the frame by: regular-session rows when the frame has a
    session column, of the first ``symbols`` symbols, ``per_symbol`` rows each spread from
    the first to the last (open, midday, close), in time order."""
    if "session" in table.column_names:
        regular = table.filter(pc.equal(table.column("session"), "regular"))
        if regular.num_rows:
            table = regular
    if "symbol" not in table.column_names or not table.num_rows:
        return table.slice(0, per_symbol * symbols)
    names = sorted(pc.unique(table.column("symbol")).to_pylist())[:symbols]
    order = "ts" if "ts" in table.column_names else table.column_names[0]
    picked = []
    for name in names:
        # Row numbers, sorted by one column: a day of trades is millions of rows (archive).
        rows = pc.indices_nonzero(pc.equal(table.column("symbol"), name))
        rows = rows.take(pc.sort_indices(table.column(order).take(rows)))
        at = np.unique(np.linspace(0, len(rows) - 1, per_symbol).round().astype(np.intp))
        picked.append(table.take(rows.take(pa.array(at))))
    return pa.concat_tables(picked)


def preview(table: pa.Table, columns: Sequence[str] | None = None) -> dg.MetadataValue:
    """A markdown table of ``representative_rows`` (times in UTC), cut to fit inline."""
    sample = representative_rows(table)
    shown = [c for c in (columns or PREVIEW_COLUMNS) if c in sample.column_names]
    rows = sample.select(shown or sample.column_names[:6]).to_pylist()
    names = {"ts": "ts UTC"}
    rows = [{names.get(k, k): v for k, v in row.items()} for row in rows]
    return dg.MetadataValue.md(markdown_table(rows))


def frame_summary(table: pa.Table, ts_column: str = "ts") -> dict[str, dg.MetadataValue]:
    """Rows, symbols, first and last timestamp and a ``preview`` of ``table``."""
    meta: dict[str, dg.MetadataValue] = {"rows": dg.MetadataValue.int(table.num_rows)}
    if "symbol" in table.column_names:
        meta["symbols"] = dg.MetadataValue.int(len(pc.unique(table.column("symbol"))))
    if table.num_rows:
        lo, hi = pc.min_max(table.column(ts_column)).values()
        meta["first_ts"] = dg.MetadataValue.text(lo.as_py().isoformat())
        meta["last_ts"] = dg.MetadataValue.text(hi.as_py().isoformat())
        meta["preview"] = preview(table)
    return meta


def _ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


def price_chart(
    bars: pa.Table,
    symbol: str,
    day: date,
    marked: tuple[datetime, datetime] | None = None,
    price_unit: str = "USD",
    volume_unit: str = "shares",
) -> dg.MetadataValue:
    """Close (line) and volume (bars) of one symbol's day, rows in time order, as markdown
    Dagster shows inline: a title naming symbol, day and units, the chart with ``marked``
    (the regular session) shaded, and the ranges the picture has no axes for."""
    ts = pc.cast(bars.column("ts"), pa.int64()).to_numpy().astype(float)
    close = pc.cast(bars.column("close"), pa.float64()).to_numpy()
    volume = pc.cast(bars.column("volume"), pa.float64()).to_numpy()
    shade = (_ms(marked[0]), _ms(marked[1])) if marked else None
    title = f"**{symbol} · {day}** · close {price_unit}, volume {volume_unit}"
    if marked:
        title += f" · shaded: regular session {marked[0]:%H:%M}-{marked[1]:%H:%M} UTC"
    first, last = bars.column("ts")[0].as_py(), bars.column("ts")[-1].as_py()
    caption = (
        f"{first:%H:%M}-{last:%H:%M} UTC · close {close.min():g}-{close.max():g} "
        f"(last {close[-1]:g}) · volume {volume.sum():,.0f}"
    )
    budget = MD_INLINE - len(title) - len(caption) - len(symbol) - 20

    def draw(points: int) -> str:
        return line_chart_svg(
            [Series(ts, close)], points=points, shade=shade, bars=Series(ts, volume)
        )

    uri = fitted_chart_uri(draw, budget)
    return dg.MetadataValue.md(f"{title}\n\n![{symbol} {day}]({uri})\n\n{caption}")


def smile_chart(chain: pa.Table, underlying: str, expiry: date) -> dg.MetadataValue:
    """Implied volatility by strike of one underlying's expiry, calls and puts as two lines,
    as inline markdown titled with underlying, expiry and what the colours are."""
    one = chain.filter(
        pc.and_(
            pc.equal(chain.column("underlying"), underlying),
            pc.equal(chain.column("expiry"), pa.scalar(expiry, pa.date32())),
        )
    ).sort_by("strike")
    lines, ranges = [], []
    for right in ("C", "P"):
        side = one.filter(
            pc.and_(
                pc.equal(pc.utf8_upper(pc.utf8_slice_codeunits(one.column("right"), 0, 1)), right),
                pc.is_valid(one.column("implied_volatility")),
            )
        )
        if side.num_rows:
            strike = pc.cast(side.column("strike"), pa.float64()).to_numpy()
            iv = side.column("implied_volatility").to_numpy()
            lines.append(Series(strike, iv))
            ranges.append(f"{'calls' if right == 'C' else 'puts'} IV {iv.min():.1%}-{iv.max():.1%}")
    title = f"**{underlying} · expiry {expiry}** · IV by strike: calls blue, puts orange"
    if not lines:
        return dg.MetadataValue.md(f"{title}\n\nno implied volatility in this snapshot")
    strikes = np.concatenate([s.x for s in lines])
    caption = f"strikes {strikes.min():g}-{strikes.max():g} · " + " · ".join(ranges)
    budget = MD_INLINE - len(title) - len(caption) - 40
    uri = fitted_chart_uri(lambda points: line_chart_svg(lines, points=points), budget)
    return dg.MetadataValue.md(f"{title}\n\n![{underlying} {expiry} IV]({uri})\n\n{caption}")


def chain_summary(chain: pa.Table) -> dict[str, dg.MetadataValue]:
    """An option chain snapshot with underlyings and contracts counted apart: rows, the
    number of each, a table per underlying (spot, contracts, expiries) and a preview of the
    contracts nearest the money at each underlying's nearest expiry."""
    meta: dict[str, dg.MetadataValue] = {
        "rows": dg.MetadataValue.int(chain.num_rows),
        "underlyings": dg.MetadataValue.int(len(pc.unique(chain.column("underlying")))),
        "contracts": dg.MetadataValue.int(len(pc.unique(chain.column("symbol")))),
    }
    if not chain.num_rows:
        return meta
    rows, near = [], []
    for underlying in sorted(pc.unique(chain.column("underlying")).to_pylist()):
        one = chain.filter(pc.equal(chain.column("underlying"), underlying))
        spot = pc.max(one.column("underlying_price")).as_py()
        expiries = sorted(pc.unique(one.column("expiry")).to_pylist())
        rows.append(
            {
                "underlying": underlying,
                "spot": spot,
                "contracts": len(pc.unique(one.column("symbol"))),
                "expiries": len(expiries),
                "nearest": expiries[0],
                "farthest": expiries[-1],
            }
        )
        first = one.filter(pc.equal(one.column("expiry"), pa.scalar(expiries[0], pa.date32())))
        distance = pc.abs(pc.subtract(pc.cast(first.column("strike"), pa.float64()), float(spot)))
        nearest = first.take(pc.sort_indices(distance)).slice(0, 4).sort_by("strike")
        near += nearest.to_pylist()
    meta["per_underlying"] = dg.MetadataValue.md(markdown_table(rows))
    columns = ("underlying", "expiry", "strike", "right", "bid_price", "ask_price")
    meta["preview"] = dg.MetadataValue.md(
        markdown_table(
            [{**{c: r[c] for c in columns}, "iv": r["implied_volatility"]} for r in near]
        )
    )
    return meta
