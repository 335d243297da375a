"""Historical assets end to end on the synthetic provider: chDB warehouse, Parquet lake."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quant_assets.historical import (
    option_bars_1m,
    option_chain_snapshots,
    stock_bars_1d,
    stock_bars_1m,
)
from quant_assets.jobs import historical_daily_job
from quant_assets.schema import clickhouse_schema
from quant_resources.lake import LakeResource
from quant_resources.migrations import load
from quant_resources.store import HistoricalStore
from quant_resources.synthetic import SyntheticMarketResource
from tests.dagster_helpers import failure_text

DAYS = ["2024-11-27", "2024-11-29"]  # a full day and the half day after Thanksgiving
ALL = [stock_bars_1m, stock_bars_1d, option_chain_snapshots, option_bars_1m]


@pytest.fixture
def env(warehouse, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANT_EQUITY_SYMBOLS", "SPY,AAPL")
    monkeypatch.setenv("QUANT_OPTION_UNDERLYINGS", "SPY")
    lake = LakeResource(url=f"file://{tmp_path / 'lake'}")
    resources = {
        "warehouse": warehouse,
        "lake": lake,
        "store": HistoricalStore(warehouse=warehouse, lake=lake),
        "market_data": SyntheticMarketResource(seed=11),
    }
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(
        [clickhouse_schema],
        partition_key=load("clickhouse")[-1].key,
        resources=resources,
        instance=instance,
    )
    return resources, instance


def _run(env, assets, key, **kwargs) -> dg.ExecuteInProcessResult:
    resources, instance = env
    return dg.materialize(
        assets, partition_key=key, resources=resources, instance=instance, **kwargs
    )


def _checks(result) -> dict[str, bool]:
    """ "asset.check" -> passed, for every check evaluated in the run."""
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            key = data.asset_check_key
            found[f"{key.asset_key.path[-1]}.{key.name}"] = data.passed
    return found


VALUE_COLUMN = {"options_quotes": "bid_price"}


def _json(table: pa.Table) -> bytes:
    return table.to_pandas().to_json(date_format="iso").encode()


def _fingerprint(env) -> dict:
    """Row counts and content hashes of every table and every lake file."""
    resources, _ = env
    wh, lake = resources["warehouse"], resources["lake"]
    tables = {
        table: wh.query_rows(
            f"SELECT count(), sum(cityHash64(symbol, ts, "
            f"toString({VALUE_COLUMN.get(table, 'close')}))) FROM {table} FINAL"
        )[0]
        for table in ("bars_1m", "bars_1d", "options_quotes", "option_bars_1m")
    }
    lake_files = {
        key: hashlib.sha256(
            lake.read_parquet(key).to_pandas().to_json(date_format="iso").encode()
        ).hexdigest()
        for key in lake.list("")
    }
    return {"tables": tables, "lake": lake_files}


def test_assets_fill_and_every_check_passes_then_rerun_is_identical(env) -> None:
    for key in DAYS:
        result = _run(env, ALL, key)
        assert result.success
        checks = _checks(result)
        assert checks and all(checks.values()), checks
        assert "stock_bars_1m.regular_minutes_complete" in checks
    first = _fingerprint(env)
    wh = env[0]["warehouse"]
    per_day = dict(
        wh.query_rows(
            "SELECT session_date, countIf(session = 'regular') FROM bars_1m FINAL "
            "WHERE symbol = 'SPY' GROUP BY session_date"
        )
    )
    assert per_day == {date(2024, 11, 27): 390, date(2024, 11, 29): 210}  # half day: 13:00 close
    assert first["tables"]["bars_1d"][0] == 4  # 2 symbols x 2 days
    for key in DAYS:
        assert _run(env, [stock_bars_1m, stock_bars_1d, option_bars_1m], key).success
    assert _fingerprint(env) == first
    assert wh.scalar("SELECT count() FROM bars_1m") == first["tables"]["bars_1m"][0]


def _range(env, assets, first: str, last: str) -> dg.ExecuteInProcessResult:
    """One run of the partitions first..last, as a backfill policy makes it."""
    resources, instance = env
    tags = {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
    return dg.materialize(assets, resources=resources, instance=instance, tags=tags)


def test_a_run_of_two_sessions_describes_and_checks_each_on_its_own(env) -> None:
    result = _range(env, [stock_bars_1m, stock_bars_1d], *DAYS)
    assert result.success
    for node, rows in (("stock_bars_1m", 400), ("stock_bars_1d", 1)):
        by_day = {m.partition: m.metadata for m in result.asset_materializations_for_node(node)}
        assert sorted(by_day) == DAYS
        for day, meta in by_day.items():
            # Each partition's own counts and range, not the run's totals.
            # (post-market ends at 01:00 UTC the next calendar day)
            after = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
            assert meta["first_ts"].value[:10] == day
            assert meta["last_ts"].value[:10] in (day, after)
            assert meta["last_ts"].value < f"{after}T01:01"
            assert meta["rows"].value >= rows and meta["symbols"].value == 2
            assert meta["run_sessions"].value == "2024-11-27..2024-11-29 (2)"
    minute = {
        m.partition: m.metadata for m in result.asset_materializations_for_node("stock_bars_1m")
    }
    assert minute[DAYS[0]]["rows"].value > minute[DAYS[1]]["rows"].value  # the half day
    chart = minute[DAYS[1]]["chart"].value
    assert chart.startswith("**SPY · 2024-11-29** · close USD, volume shares")
    assert "shaded: regular session 14:30-18:00 UTC" in chart  # the half day closes at 13:00 ET
    assert "](data:image/svg+xml," in chart and len(chart) < 1000  # shown inline by the UI
    daily = {  # ui: the daily partition has its day's chart too, drawn from its minute bars
        m.partition: m.metadata for m in result.asset_materializations_for_node("stock_bars_1d")
    }
    assert daily[DAYS[1]]["chart"].value == chart  # ui
    preview = minute[DAYS[0]]["preview"].value
    assert "| AAPL | 14:30 |" in preview and "| SPY | 20:59 |" in preview  # regular, both
    evaluations = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    per_check: dict[str, list] = {}
    for evaluation in evaluations:
        key = f"{evaluation.asset_key.path[-1]}.{evaluation.check_name}"
        per_check.setdefault(key, []).append(evaluation.partition)
        assert evaluation.passed and evaluation.description
    assert len(per_check) == 7 and all(sorted(p) == DAYS for p in per_check.values()), per_check


def test_every_check_has_a_description_and_names_its_partition() -> None:
    from quant_definitions import defs

    specs = [
        spec
        for assets_def in defs.resolve_asset_graph().assets_defs
        for spec in assets_def.check_specs
    ]
    assert len(specs) >= 19  # historical, replay, schema and live checks
    assert [s.key for s in specs if not s.description] == []
    historical = [s for s in specs if s.asset_key.path[-1] in {a.key.path[-1] for a in ALL}]
    assert historical and all(s.partitions_def is not None for s in historical)


def test_option_snapshot_counts_underlyings_and_contracts_and_draws_smiles(env) -> None:
    result = _run(env, [option_chain_snapshots], DAYS[0])
    meta = result.asset_materializations_for_node("option_chain_snapshots")[0].metadata
    assert meta["underlyings"].value == 1 and meta["contracts"].value == meta["rows"].value > 40
    assert "| SPY |" in meta["per_underlying"].value
    smiles = [k for k in meta if k.startswith("iv_smile SPY ")]
    assert len(smiles) == 4
    smile = meta[smiles[0]].value
    assert "IV by strike: calls blue, puts orange" in smile and "polyline" in smile
    assert len(smile) < 1000


class BrokenProvider(SyntheticMarketResource):
    """The synthetic market with one bar corrupted the way a bad API answer would be."""

    def stock_bars_1m(self, symbols, start, end, adjustment="raw"):
        bars = super().stock_bars_1m(symbols, start, end, adjustment)
        low = bars.column("low").to_pylist()
        low[5] = bars.column("high")[5].as_py() * 2  # low above high
        return bars.set_column(
            bars.column_names.index("low"), "low", pa.array(low, bars.schema.field("low").type)
        )


def test_bad_bar_fails_the_partition_naming_symbol_and_ts_and_keeps_previous(env) -> None:
    assert _run(env, [stock_bars_1m], DAYS[0]).success
    before = _fingerprint(env)
    resources, instance = env
    broken = {**resources, "market_data": BrokenProvider(seed=11)}
    result = dg.materialize(
        [stock_bars_1m],
        partition_key=DAYS[0],
        resources=broken,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    message = failure_text(result)
    assert "low_above_body: symbol=SPY ts=2024-11-27T09:" in message
    assert "nothing written" in message
    assert _fingerprint(env) == before


class GappyProvider(SyntheticMarketResource):
    def stock_bars_1m(self, symbols, start, end, adjustment="raw"):
        bars = super().stock_bars_1m(symbols, start, end, adjustment)
        minute = pc.minute(bars.column("ts"))
        return bars.filter(
            pc.invert(pc.and_(pc.equal(bars.column("symbol"), "SPY"), pc.less(minute, 20)))
        )


def test_missing_minutes_are_listed_and_fail_above_threshold(env) -> None:
    resources, instance = env
    result = dg.materialize(
        [stock_bars_1m],
        partition_key=DAYS[0],
        instance=instance,
        resources={**resources, "market_data": GappyProvider(seed=11)},
    )
    assert result.success  # the completeness check is not blocking
    checks = _checks(result)
    assert checks["stock_bars_1m.regular_minutes_complete"] is False
    evaluation = next(
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_check_key.name == "regular_minutes_complete"
    )
    assert evaluation.partition == DAYS[0]
    table = evaluation.metadata["per_symbol"]  # ui3: a table (drawn in place), worst first
    spy, aapl = (r.data for r in table.records[:2])
    assert (spy["symbol"], spy["day"], spy["expected"], spy["present"]) == (
        "SPY", "2024-11-27", 390, 270
    )  # fmt: skip
    assert spy["missing"].startswith("2024-11-27T15:00Z")  # :00-:19 gone
    assert (aapl["symbol"], aapl["expected"], aapl["present"]) == ("AAPL", 390, 390)


def test_a_session_that_has_not_ended_is_refused(env) -> None:
    from quant_assets.partitions import trading_day_partitions

    today = trading_day_partitions.get_last_partition_key()
    result = _run(env, [stock_bars_1m], today, raise_on_error=False)
    if result.success:  # the last partition has ended when this runs late at night
        return
    message = failure_text(result)
    assert "has not ended yet" in message


def test_partitions_are_nyse_sessions_and_backfills_batch() -> None:
    from quant_assets.partitions import trading_day_partitions

    keys = set(trading_day_partitions.get_partition_keys())
    assert {"2024-11-27", "2024-11-29", "2016-01-04"} <= keys
    assert not {"2024-11-28", "2024-12-25", "2024-11-30", "2024-07-04"} & keys
    assert stock_bars_1m.backfill_policy.max_partitions_per_run == 25
    from quant_definitions import defs

    assert defs.get_job_def(historical_daily_job.name).partitions_def == trading_day_partitions


def test_option_bars_need_a_chain_first(env) -> None:
    result = _run(env, [option_bars_1m], DAYS[0], raise_on_error=False)
    assert not result.success
    assert "materialise option_chain_snapshots" in failure_text(result)


def test_lake_has_one_file_per_day_and_the_per_symbol_layout_is_replaced(env) -> None:
    lake = env[0]["lake"]
    day = date.fromisoformat(DAYS[0])
    old = lake.key("bars_1m", "synthetic", day, "SPY")
    lake.write_parquet(old, pa.table({"x": [1]}))
    assert _run(env, [stock_bars_1m], DAYS[0]).success
    (key,) = lake.list("bars_1m/")
    assert key == "bars_1m/source=synthetic/date=2024-11-27/part.parquet"
    stored = lake.read_parquet(key)
    assert set(stored["symbol"].to_pylist()) == {"SPY", "AAPL"}
    in_warehouse = env[0]["warehouse"].scalar(
        "SELECT count() FROM bars_1m FINAL WHERE session_date = {d:Date}", {"d": day}
    )
    assert stored.num_rows == in_warehouse


def test_checks_read_the_stored_slice_back_when_it_differs_from_what_was_written(env) -> None:
    from quant_assets.historical import BAR_SLICE, _as_stored
    from quant_core.calendar import session

    resources, _ = env
    wh, market = resources["warehouse"], resources["market_data"]
    day = date.fromisoformat(DAYS[0])
    sess = session(day)
    bars = market.stock_bars_1m(["SPY", "AAPL"], sess.pre_open, sess.post_close)
    wh.replace_slice("bars_1m", BAR_SLICE, {"src": "synthetic", "days": [day]}, bars)
    assert _as_stored(wh, "bars_1m", "synthetic", [day], bars) is bars
    leftover = bars.slice(0, 1).append_column("version", pa.array([1], pa.uint64()))
    wh.insert("bars_1m", leftover)  # a row of an older version the delete did not remove
    stored = _as_stored(wh, "bars_1m", "synthetic", [day], bars)
    assert stored is not bars and stored.num_rows == bars.num_rows + 1


def test_quality_rules_name_duplicates_and_bars_outside_their_session() -> None:
    from quant_core.calendar import session
    from quant_core.quality import duplicate_findings, outside_session_findings
    from quant_core.synthetic import equity_bars

    day = date(2024, 11, 27)
    sess = session(day)
    bars = equity_bars(11, "SPY", sess)
    assert duplicate_findings(bars, ("symbol", "ts")) == []
    assert outside_session_findings(bars, {day: sess}) == []
    (dup,) = duplicate_findings(pa.concat_tables([bars, bars.slice(3, 1)]), ("symbol", "ts"))
    assert str(dup).startswith("duplicate: symbol=SPY ts=2024-11-27T09:") and "2 rows" in str(dup)
    late = pa.array([sess.post_close], bars.schema.field("ts").type)
    moved = pa.concat_tables([bars, bars.slice(0, 1).set_column(3, "ts", late)])
    (outside,) = outside_session_findings(moved, {day: sess})
    assert outside.rule == "outside_session" and outside.ts == sess.post_close.isoformat()
    stray = outside_session_findings(bars, {date(2024, 11, 26): session(date(2024, 11, 26))})
    assert stray[-1].rule == "not_a_session"


RANGE = ["2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29"]  # Thanksgiving is no session
REQUESTS: list[tuple[date, date]] = []


class CountingProvider(SyntheticMarketResource):
    def stock_bars_1m(self, symbols, start, end, adjustment="raw"):
        REQUESTS.append((start.date(), end.date()))
        return super().stock_bars_1m(symbols, start, end, adjustment)


class BrokenLastDayProvider(BrokenProvider):
    """Good bars, except in the request that reaches the range's last session."""

    def stock_bars_1m(self, symbols, start, end, adjustment="raw"):
        if end.date() < date(2024, 11, 29):
            return SyntheticMarketResource.stock_bars_1m(self, symbols, start, end, adjustment)
        return super().stock_bars_1m(symbols, start, end, adjustment)


def _run_range(env, market) -> dg.ExecuteInProcessResult:
    resources, instance = env
    return dg.materialize(
        [stock_bars_1m],
        resources={**resources, "market_data": market},
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": RANGE[0],
            "dagster/asset_partition_range_end": RANGE[-1],
        },
        raise_on_error=False,
    )


def test_a_run_in_pieces_stores_what_one_piece_stores_and_a_bad_last_piece_writes_nothing(
    env, monkeypatch
) -> None:
    import quant_assets.historical as historical

    REQUESTS.clear()
    assert _run_range(env, CountingProvider(seed=11)).success
    assert len(REQUESTS) == 1  # 4 sessions of 2 symbols fit one piece
    whole = _fingerprint(env)
    wh = env[0]["warehouse"]
    assert whole["tables"]["bars_1m"][0] > 4 * 2 * 390
    monkeypatch.setattr(historical, "PIECE_BARS", 1)  # one session per request
    REQUESTS.clear()
    result = _run_range(env, CountingProvider(seed=11))
    assert result.success
    assert len(REQUESTS) == 4 and [r[0].isoformat() for r in REQUESTS] == RANGE
    checks = _checks(result)
    assert checks and all(checks.values()), checks
    assert _fingerprint(env) == whole
    assert wh.scalar("SELECT count() FROM bars_1m") == whole["tables"]["bars_1m"][0]
    failed = _run_range(env, BrokenLastDayProvider(seed=11))
    assert not failed.success
    message = failure_text(failed)
    assert "low_above_body: symbol=SPY ts=2024-11-29T" in message and "nothing written" in message
    assert _fingerprint(env) == whole  # three good pieces were staged, none was published
    assert wh.scalar("SELECT count() FROM bars_1m") == whole["tables"]["bars_1m"][0]
    assert not wh.query_rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND startsWith(name, '_stage_')"
    )


def test_split_by_day_keeps_row_order_whether_sliced_or_sorted(monkeypatch) -> None:
    import quant_resources.store as store
    from quant_core.calendar import session

    market = SyntheticMarketResource(seed=11)
    first, last = session(date(2024, 11, 25)), session(date(2024, 11, 27))
    bars = market.stock_bars_1m(["SPY", "AAPL"], first.pre_open, last.post_close)
    expected = {
        day: bars.filter(pc.equal(bars.column("session_date"), pa.scalar(day, pa.date32())))
        for day in (date(2024, 11, 25), date(2024, 11, 26), date(2024, 11, 27))
    }
    shuffled = bars.take(
        pa.array(list(range(1, bars.num_rows, 2)) + list(range(0, bars.num_rows, 2)))
    )
    shuffled_expected = {
        day: shuffled.filter(pc.equal(shuffled.column("session_date"), pa.scalar(day, pa.date32())))
        for day in expected
    }
    for limit in (store.MAX_DAY_RUNS, 0):  # runs sliced without a copy; sorted by day
        monkeypatch.setattr(store, "MAX_DAY_RUNS", limit)
        for table, want in ((bars, expected), (shuffled, shuffled_expected)):
            got = store.split_by_day(table)
            assert list(got) == list(want)
            assert all(got[d].equals(want[d]) for d in want)


class EmptyProvider(SyntheticMarketResource):
    """A provider that answers a trading session with no bars at all."""

    def stock_bars_1m(self, symbols, start, end, adjustment="raw"):
        return super().stock_bars_1m(symbols, start, end, adjustment).slice(0, 0)


def test_an_empty_provider_answer_is_refused_and_keeps_the_stored_day(env) -> None:
    assert _run(env, [stock_bars_1m], DAYS[0]).success
    before = _fingerprint(env)
    resources, instance = env
    result = dg.materialize(
        [stock_bars_1m],
        partition_key=DAYS[0],
        resources={**resources, "market_data": EmptyProvider(seed=11)},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    message = failure_text(result)
    assert "synthetic answered nothing for bars_1m on 2024-11-27" in message
    assert "SPY, AAPL" in message and "allow_empty_days" in message
    assert _fingerprint(env) == before
    allowed = dg.materialize(
        [stock_bars_1m],
        partition_key=DAYS[0],
        resources={**resources, "market_data": EmptyProvider(seed=11)},
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"stock_bars_1m": {"config": {"allow_empty_days": [DAYS[0]]}}}},
    )
    assert allowed.success, failure_text(allowed)
    meta = allowed.asset_materializations_for_node("stock_bars_1m")[0].metadata
    assert meta["overrides"].value == ["2024-11-27: empty answer allowed (allow_empty_days)"]
    assert env[0]["warehouse"].scalar("SELECT count() FROM bars_1m") == 0
    assert env[0]["lake"].list("bars_1m/") == []


class FailingLake(LakeResource):
    def prepare_bytes(self, key: str, data: bytes):
        raise OSError(f"cannot write {key}: no space left on device")


def test_a_lake_failure_fails_the_run_with_metadata_and_the_next_run_repairs(env) -> None:
    resources, instance = env
    assert _run(env, [stock_bars_1m], DAYS[0]).success
    broken_lake = FailingLake(url=resources["lake"].url)
    broken = {
        **resources,
        "market_data": SyntheticMarketResource(seed=12),
        "store": HistoricalStore(warehouse=resources["warehouse"], lake=broken_lake),
    }
    result = dg.materialize(
        [stock_bars_1m],
        partition_key=DAYS[0],
        resources=broken,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data
    assert "ClickHouse holds the new version" in failure.error.message
    assert "no space left on device" in failure.error.message
    assert failure.user_failure_data.metadata["state"].value == "clickhouse"
    again = _run(env, [stock_bars_1m], DAYS[1])
    meta = again.asset_materializations_for_node("stock_bars_1m")[0].metadata
    (note,) = meta["repaired"].value
    assert "rewrote 1 lake files from ClickHouse" in note
    lake, wh = resources["lake"], resources["warehouse"]
    day = date.fromisoformat(DAYS[0])
    stored = lake.read_parquet(lake.key("bars_1m", "synthetic", day))
    assert stored.num_rows == wh.scalar(
        "SELECT count() FROM bars_1m FINAL WHERE session_date = {d:Date}", {"d": day}
    )
    assert sorted(stored.column("close").to_pylist()) == sorted(
        r[0]
        for r in wh.query_rows(
            "SELECT close FROM bars_1m FINAL WHERE session_date = {d:Date}", {"d": day}
        )
    )


def test_cli_backfill_of_an_unknown_job_names_it_and_lists_the_valid_ones(quant_home) -> None:
    from typer.testing import CliRunner

    from quant_cli.main import app

    result = CliRunner().invoke(
        app, ["backfill", "--from", "2024-07-01", "--to", "2024-07-02", "--job", "nope"]
    )
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # a usage error, no traceback
    text = " ".join(result.output.split())  # the error box wraps lines
    assert "--job='nope' is not a job over NYSE sessions" in text
    assert "historical_daily_job" in text and "option_bars_job" in text
    assert not (quant_home / "dagster").exists()  # refused before anything was set up
