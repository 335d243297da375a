"""Check findings are a Dagster table value, which the check pages of Dagster 1.13 draw in
place (a markdown value there hides behind "[Show Markdown]"): the findings' fields as
columns, at most ``TABLE_ROWS`` rows and a last one counting the rest, "no findings" as text."""

from __future__ import annotations

import dagster as dg

from quant_assets.quality_checks import TABLE_ROWS, check_table, findings_table
from quant_core.quality import Finding


def test_findings_are_a_table_of_their_fields() -> None:
    found = [Finding("ohlc", "SPY", f"2024-11-27T15:{m:02d}Z", "high < low") for m in range(25)]
    table = findings_table(found)
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == ["rule", "symbol", "ts", "detail"]
    assert table.records[0].data == {
        "rule": "ohlc", "symbol": "SPY", "ts": "2024-11-27T15:00Z", "detail": "high < low"
    }  # fmt: skip
    assert len(table.records) == TABLE_ROWS + 1
    more = {"rule": None, "symbol": None, "ts": None, "detail": f"… {25 - TABLE_ROWS} more rows"}
    assert table.records[-1].data == more
    assert findings_table([]) == dg.MetadataValue.text("no findings")
    plain = findings_table(["ts: type timestamp[ms]"])  # a finding that is only text
    assert [r.data for r in plain.records] == [{"finding": "ts: type timestamp[ms]"}]


def test_numbers_stay_numbers() -> None:
    table = check_table([{"symbol": "SPY", "expected": 390, "present": 270}])
    assert [(c.name, c.type) for c in table.schema.columns] == [
        ("symbol", "string"), ("expected", "int"), ("present", "int")
    ]  # fmt: skip
    assert table.records[0].data == {"symbol": "SPY", "expected": 390, "present": 270}
