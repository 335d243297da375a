"""Binance archive: the client against the real ``quant sim binance-archive`` over HTTP, the
file parser's bad-input errors, and the sim's klines against the project's bars."""

from __future__ import annotations

import io
import zipfile
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import requests

from quant_core.bars import aggregate_trades
from quant_core.bars_batch import aggregate_batch
from quant_core.formats.binance_archive import (
    ArchiveFormatError,
    Period,
    archive_path,
    read_table,
)
from quant_core.tables import scaled_int64
from quant_dev.processes import archive_simulator
from quant_resources.binance_archive import (
    ArchiveClient,
    ArchiveError,
    ArchiveMissing,
    ArchiveUnavailable,
    ChecksumMismatch,
    CorruptArchive,
    TruncatedDownload,
)
from quant_resources.settings import binance_archive_url

AGGS = 3000
FAULTS = ",".join(
    [
        "missing:BTCUSDT-aggTrades-2024-12-05",
        "corrupt:BTCUSDT-aggTrades-2024-12-06",
        "checksum:BTCUSDT-aggTrades-2024-12-07",
        "truncate:BTCUSDT-aggTrades-2024-12-08",
        "slow:BTCUSDT-aggTrades-2024-12-09:5",
        "5xx:BTCUSDT-aggTrades-2024-12-10:2",
        "5xx:ETHUSDT-aggTrades-2024-12-10:1000",
        "badrow:BTCUSDT-*-2024-12-11",
        # Month files (their stems have no day): each fault once, on a kind/symbol whose
        # December month file no other test reads.
        "5xx:BTCUSDT-aggTrades-2024-12:2",
        "corrupt:BTCUSDT-trades-2024-12",
        "checksum:ETHUSDT-trades-2024-12",
        "slow:ETHUSDT-trades-2024-12:0.6",  # its answers also come late (not once too late)
        "badrow:BTCUSDT-1m-2024-12",
        "truncate:ETHUSDT-1m-2024-12",
    ]
)
# Month files are cached under QUANT_HOME: a private one per test.
pytestmark = pytest.mark.usefixtures("quant_home")


@pytest.fixture(scope="module")
def sim_url():
    args = ["--symbols", "btcusdt,ethusdt", "--first", "2024-12-01", "--last", "2025-01-20"]
    args += ["--aggs-per-day", str(AGGS), "--header-from", "2025-01-10", "--faults", FAULTS]
    with archive_simulator(*args) as (_, url):
        yield url


def client(url: str, **kwargs) -> ArchiveClient:
    kwargs = {"attempts": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05, **kwargs}
    return ArchiveClient(url, **kwargs)


def micros(table: pa.Table, column: str = "ts_event") -> np.ndarray:
    return pc.cast(pc.cast(table[column], pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy()


# -- downloads ---------------------------------------------------------------------------------


def test_daily_millisecond_file(sim_url: str) -> None:
    day = date(2024, 12, 2)
    table = client(sim_url).day("aggTrades", "btcusdt", day)
    assert table.num_rows == AGGS
    assert table.schema.metadata[b"time_unit"] == b"ms"
    ts = micros(table)
    lo, hi = Period.day(day).bounds_ms()
    assert (ts % 1000 == 0).all() and lo * 1000 <= ts.min() and ts.max() < hi * 1000
    ids = table["agg_trade_id"].to_numpy()
    assert (np.diff(ids) == 1).all()
    assert (table["price"].to_numpy() > 0).all() and table["symbol"][0].as_py() == "BTCUSDT"


def test_daily_microsecond_file_keeps_microseconds(sim_url: str) -> None:
    table = client(sim_url).day("aggTrades", "ETHUSDT", date(2025, 1, 3))
    assert table.schema.metadata[b"time_unit"] == b"us"
    assert table.schema.field("ts_event").type == pa.timestamp("us", tz="UTC")
    assert (micros(table) % 1000 != 0).any()  # sub-millisecond digits survive


def test_files_with_and_without_header(sim_url: str) -> None:
    archive = client(sim_url)
    for day, has_header in ((date(2025, 1, 9), False), (date(2025, 1, 10), True)):
        period = Period.day(day)
        with archive.download("trades", "BTCUSDT", period) as path, zipfile.ZipFile(path) as zf:
            (member,) = zf.namelist()
            assert member == f"BTCUSDT-trades-{day}.csv"
            assert zf.read(member)[:1].isalpha() is has_header
        table = archive.table("trades", "BTCUSDT", period)
        assert table.num_rows >= AGGS  # every row parsed, the header skipped


def test_monthly_file_is_its_days(sim_url: str) -> None:
    archive = client(sim_url)
    month = archive.month("aggTrades", "ETHUSDT", 2024, 12)
    assert month.num_rows == 31 * AGGS
    day = archive.day("aggTrades", "ETHUSDT", date(2024, 12, 3))
    lo = day["agg_trade_id"][0].as_py()
    assert (
        month.filter(pc.equal(month["agg_trade_id"], lo)).to_pylist() == day.slice(0, 1).to_pylist()
    )


def test_history_takes_days_of_a_complete_month_from_its_month_file(sim_url: str, tmp_path) -> None:
    archive = client(sim_url, cache_dir=tmp_path)
    got = list(archive.history("aggTrades", "ETHUSDT", date(2024, 11, 30), date(2025, 1, 1)))
    assert [f.period for f in got] == [
        Period.day(date(2024, 11, 29) + timedelta(days=i)) for i in range(1, 34)
    ]
    # November's month file is not in the sim (its range starts in December): the day file,
    # which is not there either; January's month file is not published: its day file.
    assert got[0].table is None and got[0].file == "ETHUSDT-aggTrades-2024-11-30.zip"
    assert {f.file for f in got[1:32]} == {"ETHUSDT-aggTrades-2024-12.zip"}
    assert [f.table.num_rows for f in got[1:33]] == [AGGS] * 32
    assert got[32].file == "ETHUSDT-aggTrades-2025-01-01.zip"
    assert archive.downloaded == ["ETHUSDT-aggTrades-2024-12.zip", got[32].file]
    # A day of the month file is its day file.
    day = archive.day("aggTrades", "ETHUSDT", date(2024, 12, 3))
    assert got[3].table.equals(day)
    # Another run (another client, the same cache): the month is not downloaded again.
    again = client(sim_url, cache_dir=tmp_path)
    (one,) = again.history("aggTrades", "ETHUSDT", date(2024, 12, 3), date(2024, 12, 3))
    assert one.table.equals(day) and again.downloaded == []


def test_month_file_retried_then_sliced(sim_url: str, tmp_path) -> None:
    archive = client(sim_url, cache_dir=tmp_path)
    got = list(archive.history("aggTrades", "BTCUSDT", date(2024, 12, 30), date(2024, 12, 31)))
    assert [f.table.num_rows for f in got] == [AGGS, AGGS]
    assert archive.downloaded == ["BTCUSDT-aggTrades-2024-12.zip"]


def test_month_cache_is_bounded(sim_url: str, tmp_path) -> None:
    one_day = [date(2024, 12, 3)] * 2
    first = client(sim_url, cache_dir=tmp_path)
    list(first.history("aggTrades", "ETHUSDT", *one_day))
    (entry,) = tmp_path.glob("*/*/*/entry.json")
    size = sum(f.stat().st_size for f in entry.parent.iterdir())
    # Room for one month: filling a second evicts the least recently used.
    small = client(sim_url, cache_dir=tmp_path, cache_max_bytes=size + size // 2)
    list(small.history("aggTrades", "BTCUSDT", *one_day))
    assert [p.parent.parent.name for p in tmp_path.glob("*/*/*/entry.json")] == ["BTCUSDT"]
    list(small.history("aggTrades", "BTCUSDT", *one_day))
    assert small.downloaded == ["BTCUSDT-aggTrades-2024-12.zip"]  # the kept entry is used


@pytest.mark.parametrize(
    ("kind", "symbol", "error", "message"),
    [
        ("trades", "BTCUSDT", CorruptArchive, r"BTCUSDT-trades-2024-12.zip: cannot be unzipped"),
        ("trades", "ETHUSDT", ChecksumMismatch, r"ETHUSDT-trades-2024-12.zip: sha256 \w+ differs"),
        ("klines", "BTCUSDT", ArchiveFormatError, r"BTCUSDT-1m-2024-12.zip line 3: \w+='abc'"),
        ("klines", "ETHUSDT", TruncatedDownload, r"ETHUSDT-1m-2024-12.zip: "),
    ],
)
def test_a_bad_month_file_fails_its_days_and_is_not_cached(
    sim_url: str, tmp_path, kind: str, symbol: str, error: type, message: str
) -> None:
    archive = client(sim_url, cache_dir=tmp_path, attempts=2)
    with pytest.raises(error, match=message):
        list(archive.history(kind, symbol, date(2024, 12, 5), date(2024, 12, 5)))
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.arrow"))


def test_a_slow_month_file_is_bounded_by_the_timeout_and_not_cached(sim_url: str, tmp_path) -> None:
    archive = client(sim_url, cache_dir=tmp_path, attempts=2, timeout_seconds=0.2)
    with pytest.raises(ArchiveUnavailable, match=r"ETHUSDT-trades-2024-12.zip.CHECKSUM: timed out"):
        list(archive.history("trades", "ETHUSDT", date(2024, 12, 5), date(2024, 12, 5)))
    assert archive.downloaded == []  # no day file instead of the month
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.arrow"))


def test_trades_match_agg_trades(sim_url: str) -> None:
    archive = client(sim_url)
    aggs = archive.day("aggTrades", "BTCUSDT", date(2024, 12, 3))
    trades = archive.day("trades", "BTCUSDT", date(2024, 12, 3))
    assert (
        trades.num_rows
        == pc.sum(pc.add(pc.subtract(aggs["last_trade_id"], aggs["first_trade_id"]), 1)).as_py()
    )
    assert pc.sum(trades["qty"]).as_py() == pc.sum(aggs["qty"]).as_py()
    assert trades["trade_id"][0].as_py() == aggs["first_trade_id"][0].as_py()


@pytest.mark.parametrize("day", [date(2024, 12, 4), date(2025, 1, 12)])
def test_sim_klines_are_the_bars_of_its_agg_trades(sim_url: str, day: date) -> None:
    archive = client(sim_url)
    aggs = archive.day("aggTrades", "BTCUSDT", day)
    klines = archive.day("klines", "BTCUSDT", day)
    bars = aggregate_batch(aggs)
    assert bars.equals(aggregate_trades(aggs.rename_columns(_as_trades(aggs))))
    assert klines.num_rows == bars.num_rows == 1440
    assert micros(klines, "open_time").tolist() == micros(bars, "ts").tolist()
    for kline, bar in (
        ("open", "open"),
        ("high", "high"),
        ("low", "low"),
        ("close", "close"),
        ("volume", "volume"),
        ("quote_volume", "quote_volume"),
        ("taker_buy_volume", "taker_buy_volume"),
        ("taker_buy_quote_volume", "taker_buy_quote_volume"),
    ):
        assert klines[kline].to_pylist() == scaled_int64(bars[bar]).tolist(), kline
    assert klines["trade_count"].to_pylist() == bars["trade_count"].to_pylist()


def _as_trades(aggs: pa.Table) -> list[str]:
    return ["trade_id" if n == "agg_trade_id" else n for n in aggs.column_names]


# -- faults ------------------------------------------------------------------------------------


def test_missing_day_is_not_an_error(sim_url: str) -> None:
    with pytest.raises(ArchiveMissing, match=r"BTCUSDT-aggTrades-2024-12-05.zip") as caught:
        client(sim_url).day("aggTrades", "BTCUSDT", date(2024, 12, 5))
    assert not isinstance(caught.value, ArchiveError)
    got = list(
        client(sim_url).history(
            "aggTrades", "BTCUSDT", date(2024, 12, 4), date(2024, 12, 5), date(2024, 12, 20)
        )
    )
    assert [f.table is None for f in got] == [False, True]


def test_corrupt_zip(sim_url: str) -> None:
    with pytest.raises(CorruptArchive, match=r"BTCUSDT-aggTrades-2024-12-06.zip"):
        client(sim_url).day("aggTrades", "BTCUSDT", date(2024, 12, 6))


def test_checksum_is_verified_before_parsing(sim_url: str) -> None:
    # The sim changed a price to 'x' after the checksum: parsed first, it would be a bad row.
    with pytest.raises(ChecksumMismatch, match=r"BTCUSDT-aggTrades-2024-12-07.zip: sha256"):
        client(sim_url).day("aggTrades", "BTCUSDT", date(2024, 12, 7))


@pytest.mark.parametrize("kind", ["aggTrades", "trades", "klines"])
def test_bad_row_from_the_archive_names_file_line_value(sim_url: str, kind: str) -> None:
    name = "1m" if kind == "klines" else kind
    with pytest.raises(
        ArchiveFormatError, match=rf"BTCUSDT-{name}-2024-12-11.zip line 3: \w+='abc'"
    ):
        client(sim_url).day(kind, "BTCUSDT", date(2024, 12, 11))


def test_truncated_body(sim_url: str) -> None:
    with pytest.raises(TruncatedDownload, match=r"BTCUSDT-aggTrades-2024-12-08.zip"):
        client(sim_url, attempts=2).day("aggTrades", "BTCUSDT", date(2024, 12, 8))


def test_slow_server_is_bounded_by_the_timeout(sim_url: str) -> None:
    with pytest.raises(ArchiveUnavailable, match=r"2024-12-09.zip.CHECKSUM: timed out"):
        client(sim_url, attempts=2, timeout_seconds=0.3).day(
            "aggTrades", "BTCUSDT", date(2024, 12, 9)
        )


def test_server_errors_are_retried_then_served(sim_url: str) -> None:
    table = client(sim_url, attempts=4).day("aggTrades", "BTCUSDT", date(2024, 12, 10))
    assert table.num_rows == AGGS


def test_server_errors_outlasting_the_attempts(sim_url: str) -> None:
    with pytest.raises(ArchiveUnavailable, match=r"2024-12-10.zip: HTTP 503 in 3 attempts"):
        client(sim_url, attempts=3).day("aggTrades", "ETHUSDT", date(2024, 12, 10))


def test_sim_bounds_requests(sim_url: str) -> None:
    path = archive_path("aggTrades", "BTCUSDT", Period.day(date(2024, 12, 2)))
    assert requests.get(f"{sim_url}/{path}", data=b"x" * 10, timeout=10).status_code == 413
    outside = archive_path("aggTrades", "BTCUSDT", Period.day(date(2024, 11, 2)))
    assert requests.get(f"{sim_url}/{outside}", timeout=10).status_code == 404
    assert requests.get(f"{sim_url}/data/spot/daily/x", timeout=10).status_code == 404
    assert requests.get(
        f"{sim_url}/{path}", headers={"X": "y" * 40_000}, timeout=10
    ).status_code in (
        400,
        431,
    )


def test_archive_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BINANCE_ARCHIVE_URL", raising=False)
    assert binance_archive_url() == "https://data.binance.vision"
    monkeypatch.setenv("BINANCE_ARCHIVE_URL", "http://127.0.0.1:9/")
    assert binance_archive_url() == "http://127.0.0.1:9"
    monkeypatch.setenv("BINANCE_ARCHIVE_URL", "ftp://x")
    with pytest.raises(ValueError, match=r"BINANCE_ARCHIVE_URL"):
        binance_archive_url()


# -- bad rows ----------------------------------------------------------------------------------

DAY = Period.day(date(2024, 8, 8))
LO = DAY.bounds_ms()[0]
GOOD = {
    "aggTrades": f"1,60000.10000000,0.50000000,10,12,{LO + 5},True,True",
    "trades": f"10,60000.10000000,0.50000000,30000.05000000,{LO + 5},False,True",
    "klines": f"{LO},1.0,2.0,0.5,1.5,10.0,{LO + 59_999},15.0,3,5.0,7.5,0",
}


def parse(kind: str, text: str) -> pa.Table:
    data = text.encode()
    return read_table(lambda: io.BytesIO(data), kind, "BTCUSDT", DAY, "F.csv")


def swap(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


@pytest.mark.parametrize("kind", sorted(GOOD))
@pytest.mark.parametrize("header", [False, True])
def test_good_rows_parse(kind: str, header: bool) -> None:
    head = "a,b\n" if header else ""
    table = parse(kind, head + GOOD[kind] + "\n" + GOOD[kind] + "\n")
    assert table.num_rows == 2


@pytest.mark.parametrize(
    ("kind", "index", "value", "message"),
    [
        ("aggTrades", 1, "abc", "price='abc': is not a decimal"),
        ("aggTrades", 1, "0", "price='0': is not positive"),
        ("aggTrades", 2, "-1.5", "qty='-1.5': is not positive"),
        ("aggTrades", 1, "1.000000001", "price='1.000000001': is not a decimal"),
        ("aggTrades", 0, "x1", "agg_trade_id='x1': is not a whole number"),
        ("aggTrades", 5, str(LO - 1), f"ts_event='{LO - 1}': is outside the file's day"),
        ("aggTrades", 5, str(LO + 86_400_000), "is outside the file's day 2024-08-08"),
        ("aggTrades", 6, "maybe", "is_buyer_maker='maybe': is not True or False"),
        ("trades", 1, "-3", "price='-3'"),
        ("trades", 4, "12:00", "ts_event='12:00': is not a whole number"),
        ("klines", 6, str(LO + 86_400_000), "close_time="),
        ("klines", 2, "0.0", "high='0.0': is not positive"),
        ("klines", 8, "many", "trade_count='many'"),
    ],
)
def test_bad_value_names_file_line_and_value(kind, index, value, message) -> None:
    text = GOOD[kind] + "\n" + swap(GOOD[kind], index, value) + "\n"
    with pytest.raises(ArchiveFormatError, match=r"F.csv line 2: ") as caught:
        parse(kind, text)
    assert message in str(caught.value)
    # With a header the same row is line 3.
    with pytest.raises(ArchiveFormatError, match=r"F.csv line 3: "):
        parse(kind, "h,e,a,d\n" + text)


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_wrong_column_count_names_line(kind: str) -> None:
    short = GOOD[kind].rsplit(",", 1)[0]
    text = "\n".join([GOOD[kind]] * 3 + [short, GOOD[kind]]) + "\n"
    with pytest.raises(ArchiveFormatError, match=rf"F.csv line 4: row='{short}': has") as caught:
        parse(kind, text)
    assert "expected" in str(caught.value)
    with pytest.raises(ArchiveFormatError, match=r"F.csv line 2: .*=''"):  # a blank line
        parse(kind, GOOD[kind] + "\n\n" + GOOD[kind] + "\n")


def test_a_file_switching_units_fails_at_the_switch() -> None:
    micro = swap(GOOD["aggTrades"], 5, str((LO + 7) * 1000))
    with pytest.raises(ArchiveFormatError, match=r"line 2: ts_event=.*\(UTC, in ms\)"):
        parse("aggTrades", GOOD["aggTrades"] + "\n" + micro + "\n")
    table = parse("aggTrades", micro + "\n")
    assert table.schema.metadata[b"time_unit"] == b"us"
    assert micros(table).tolist() == [(LO + 7) * 1000]


def test_month_file_checks_the_month() -> None:
    month = Period.month(2024, 8)
    late = swap(GOOD["aggTrades"], 5, str(LO + 20 * 86_400_000))
    data = (GOOD["aggTrades"] + "\n" + late + "\n").encode()
    assert read_table(lambda: io.BytesIO(data), "aggTrades", "BTCUSDT", month, "M").num_rows == 2
    data += swap(GOOD["aggTrades"], 5, str(LO + 40 * 86_400_000)).encode() + b"\n"
    with pytest.raises(ArchiveFormatError, match=r"M line 3: .* outside the file's month 2024-08"):
        read_table(lambda: io.BytesIO(data), "aggTrades", "BTCUSDT", month, "M")


def test_empty_file_is_an_empty_table() -> None:
    assert parse("aggTrades", "").num_rows == 0
