"""A bulk stage (``WarehouseResource.staging(bulk=True)``, an archive day of trades): staged
as parts of a table shaped like the target and handed over a partition at a time (``ATTACH
PARTITION ... FROM``), one part per partition, the older version deleted, nothing left staged;
when the version must be newer than the stamp, the rows are re-stamped instead."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from tests.test_warehouse_resource import bars, stages, wh  # noqa: F401 (the fixture)

WHERE = "source = {src:String} AND session_date IN {days:Array(Date)}"
DAYS = [date(2024, 8, 8), date(2024, 9, 8)]  # two months: two partitions


def _later(table: pa.Table, days: int) -> pa.Table:
    shift = pa.scalar(timedelta(days=days), pa.duration("ms"))
    out = table
    for name in ("ts", "ts_close"):
        i = out.column_names.index(name)
        out = out.set_column(i, name, pc.add(out[name], shift))
    i = out.column_names.index("session_date")
    return out.set_column(i, "session_date", pa.array([DAYS[1]] * out.num_rows, pa.date32()))


def _parts(wh) -> list[tuple[str, int]]:  # noqa: F811
    return wh.query_rows(
        "SELECT partition_id, rows FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'bars_1m' AND active ORDER BY partition_id"
    )


def test_a_bulk_stage_hands_its_parts_over_one_per_partition(wh) -> None:  # noqa: F811
    params = {"src": "synthetic", "days": DAYS}
    wh.replace_slice("bars_1m", WHERE, params, pa.concat_tables([bars(), _later(bars(), 31)]))
    with wh.staging("bars_1m", bulk=True) as stage:
        stage.add(bars(symbols=("SPY",), minutes=2))
        stage.add(pa.concat_tables([bars(symbols=("QQQ",), minutes=2), _later(bars(), 31)]))
        wh.move(stage, stage.version)
        wh.delete_older("bars_1m", WHERE, params, stage.version)
        assert stages(wh) == [stage.name]
    assert stages(wh) == []
    assert _parts(wh) == [("202408", 4), ("202409", 6)]
    assert wh.query_rows("SELECT DISTINCT version FROM bars_1m") == [(stage.version,)]


def test_a_bulk_stage_needing_a_newer_version_is_re_stamped(wh) -> None:  # noqa: F811
    with wh.staging("bars_1m", bulk=True) as stage:
        stage.add(bars())
        wh.move(stage, stage.version + 5)
    assert wh.query_rows("SELECT DISTINCT version FROM bars_1m") == [(stage.version + 5,)]
    assert wh.scalar("SELECT count() FROM bars_1m") == 6
