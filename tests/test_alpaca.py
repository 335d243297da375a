"""AlpacaResource against ``quant sim alpaca`` running as a real subprocess: pagination, exact
values, retries, auth, broken pages and dying servers, option chains and option bars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest
import requests

from quant_core.calendar import NEW_YORK, session
from quant_core.contracts import Bar, Interval, OptionsQuote
from quant_core.synthetic import equity_bars
from quant_core.tables import BARS_1M, OPTIONS_QUOTES
from quant_dev.alpaca_sim import market, process
from quant_resources.alpaca import AlpacaAuthError, AlpacaDataError, AlpacaError, AlpacaResource

pytestmark = pytest.mark.xdist_group("alpaca_sim")

SEED = 7
NOW = datetime(2024, 8, 12, 14, 0, tzinfo=UTC)  # Monday 10:00 New York
DAYS = [date(2024, 8, 8), date(2024, 8, 9)]
START = datetime(2024, 8, 8, tzinfo=UTC)
END = datetime(2024, 8, 11, tzinfo=UTC)  # spans a weekend: no bars there
SYMBOLS = ["CCC", "AAA", "BBB"]
HEADERS = {"APCA-API-KEY-ID": "test", "APCA-API-SECRET-KEY": "test"}


def sim_args(*extra: str) -> tuple[str, ...]:
    return ("--seed", str(SEED), "--now", NOW.isoformat(), *extra)


def resource(url: str, **overrides) -> AlpacaResource:
    knobs = dict(
        api_key="test",
        secret_key="test",
        data_url=url,
        max_retries=3,
        backoff_factor_seconds=0.01,
        backoff_max_seconds=0.05,
        backoff_jitter_seconds=0.01,
        timeout_seconds=10.0,
    )
    return AlpacaResource(**{**knobs, **overrides})


def stats(url: str) -> dict:
    return requests.get(f"{url}/_sim/stats", timeout=10).json()


def expected_bars(symbols: list[str]) -> pa.Table:
    tables = [equity_bars(SEED, s, session(d)) for s in sorted(symbols) for d in DAYS]
    table = pa.concat_tables(tables)
    return table.set_column(0, "source", pa.repeat("alpaca", table.num_rows))


@pytest.fixture(scope="module")
def sim():
    with process.running(*sim_args("--page-limit", "40")) as running:
        yield running


@pytest.fixture(scope="module")
def clean_bars(sim) -> pa.Table:
    return resource(sim.url).stock_bars_1m(SYMBOLS, START, END)


def test_pagination_is_complete_and_values_are_the_generators(sim, clean_bars) -> None:
    expected = expected_bars(SYMBOLS)
    assert clean_bars.schema == BARS_1M
    assert clean_bars.num_rows == expected.num_rows > 3000
    assert clean_bars.equals(expected)  # every column, exactly (decimals included)
    served = stats(sim.url)
    assert served["pages"] >= expected.num_rows // 40
    assert set(clean_bars["session"].to_pylist()) == {"pre", "regular", "post"}


def test_bars_satisfy_the_bar_contract(clean_bars) -> None:
    for row in clean_bars.slice(0, 600).to_pylist():
        Bar(
            source=row["source"],
            symbol=row["symbol"],
            interval=Interval.M1,
            ts_event=row["ts"],
            ts_close=row["ts_close"],
            open=row["open"],
            high=row["high"],
            low=row["low"],
            close=row["close"],
            volume=row["volume"],
            vwap=row["vwap"],
            trade_count=row["trade_count"],
            quote_volume=row["quote_volume"],
            session=row["session"],
        )
        local = row["ts"].astimezone(NEW_YORK)
        assert row["session_date"] == local.date()


def test_adjustment_is_recorded_and_bad_arguments_are_refused(sim) -> None:
    alpaca = resource(sim.url)
    split = alpaca.stock_bars_1m(["AAA"], START, START + timedelta(days=1), adjustment="split")
    assert set(split["adjustment"].to_pylist()) == {"split"}
    with pytest.raises(ValueError, match="adjustment='bogus'"):
        alpaca.stock_bars_1m(["AAA"], START, END, adjustment="bogus")
    with pytest.raises(ValueError, match="naive"):
        alpaca.stock_bars_1m(["AAA"], datetime(2024, 8, 8), END)
    with pytest.raises(ValueError, match="feed='delayed'"):
        resource(sim.url, feed="delayed").stock_bars_1m(["AAA"], START, END)


def test_simulator_answers_like_alpaca(sim) -> None:
    url = f"{sim.url}/v2/stocks/bars"
    base = {"symbols": "AAA", "start": "2024-08-08T00:00:00Z", "end": "2024-08-10T00:00:00Z"}
    bad = requests.get(url, params={**base, "timeframe": "5Min"}, headers=HEADERS, timeout=10)
    assert bad.status_code == 422 and "timeframe" in bad.json()["message"]
    limit = {**base, "timeframe": "1Min", "limit": "10001"}
    too_big = requests.get(url, params=limit, headers=HEADERS, timeout=10)
    assert too_big.status_code == 422 and "limit" in too_big.json()["message"]
    daily = requests.get(url, params={**base, "timeframe": "1Day"}, headers=HEADERS, timeout=10)
    bars = daily.json()["bars"]["AAA"]
    assert [b["t"] for b in bars] == ["2024-08-08T04:00:00Z", "2024-08-09T04:00:00Z"]
    first = equity_bars(SEED, "AAA", session(DAYS[0]))
    regular = first.filter(pa.compute.equal(first["session"], "regular"))
    assert Decimal(str(bars[0]["o"])) == regular["open"][0].as_py()
    anonymous = requests.get(url, params={**base, "timeframe": "1Min"}, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json() == {"message": "unauthorized."}


def test_rate_limits_and_server_errors_are_retried(clean_bars) -> None:
    faults = "429:0.2:1,500:0.2,503:0.05,slow:0.25:2"
    with process.running(*sim_args("--page-limit", "300", "--faults", faults)) as faulty:
        alpaca = resource(faulty.url, max_retries=8, timeout_seconds=1.0)
        table = alpaca.stock_bars_1m(SYMBOLS, START, END)
        served = stats(faulty.url)
    assert table.equals(clean_bars)
    fired = served["faults"]
    assert fired.get("429", 0) >= 1 and fired.get("500", 0) >= 1 and fired.get("slow", 0) >= 1
    assert served["responses"]["429"] == fired["429"]
    assert served["responses"]["500"] == fired["500"]
    # Every 429 carried Retry-After: 1; the next request came no sooner.
    assert len(served["gaps_after_429"]) == fired["429"]
    assert min(served["gaps_after_429"]) >= 1.0


def test_rejected_keys_fail_at_once_without_the_key(sim) -> None:
    secret = "s3cret-VALUE-never-shown"
    before = stats(sim.url)["requests"]
    for key_id, status in (("test", 403), ("other-key-id", 401)):
        alpaca = resource(sim.url, api_key=key_id, secret_key=secret)
        with pytest.raises(AlpacaAuthError, match="rejected") as failure:
            alpaca.stock_bars_1m(["AAA"], START, END)
        assert f"HTTP {status}" in str(failure.value)
        assert secret not in str(failure.value) and secret not in repr(alpaca)
        assert failure.value.__cause__ is None
    assert stats(sim.url)["requests"] == before + 2  # one request each: no retry


@pytest.mark.parametrize(
    ("present", "missing"),
    [({}, "ALPACA_API_KEY and ALPACA_SECRET_KEY"), ({"ALPACA_API_KEY": "k-123"}, None)],
)
def test_missing_keys_name_the_variables(monkeypatch, present, missing) -> None:
    monkeypatch.delenv("ALPACA_API_KEY", raising=False)
    monkeypatch.delenv("ALPACA_SECRET_KEY", raising=False)
    for name, value in present.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(AlpacaAuthError) as failure:
        AlpacaResource(data_url="http://127.0.0.1:9").stock_bars_1m(["AAA"], START, END)
    message = str(failure.value)
    if missing:
        assert missing in message
    else:
        assert "ALPACA_SECRET_KEY" in message and "ALPACA_API_KEY" not in message
        assert "k-123" not in message


@pytest.mark.parametrize("fault", ["truncate", "hangup"])
def test_a_cut_page_fails_the_whole_call(fault) -> None:
    with process.running(*sim_args("--page-limit", "200", "--faults", f"{fault}:0.3")) as bad:
        with pytest.raises(AlpacaError) as failure:
            resource(bad.url).stock_bars_1m(SYMBOLS, START, END)
        served = stats(bad.url)
    assert served["faults"][fault] == 1 and served["pages"] >= 1  # failed mid-pagination
    if fault == "truncate":
        assert isinstance(failure.value, AlpacaDataError) and "not valid JSON" in str(failure.value)
    else:
        assert "Connection broken" in str(failure.value)


def test_server_killed_mid_pagination_fails_the_call() -> None:
    with process.running(*sim_args("--page-limit", "200", "--faults", "die_after_pages:3")) as s:
        with pytest.raises(AlpacaError, match="request failed"):
            resource(s.url, max_retries=2).stock_bars_1m(SYMBOLS, START, END)
        assert s.process.wait(timeout=10) == 3


def test_broken_bars_name_symbol_and_timestamp() -> None:
    reasons = {"high<low": "high < low", "negative volume": "negative volume", "NaN close": "c="}
    # One page per call (the client asks for 10,000 bars), so each call meets one broken bar.
    with process.running(*sim_args("--faults", "badrow:1")) as bad:
        alpaca = resource(bad.url)
        for attempt in range(3):  # the simulator rotates through the three kinds
            with pytest.raises(AlpacaDataError) as failure:
                alpaca.stock_bars_1m(SYMBOLS, START, END)
            broken = stats(bad.url)["badrows"][attempt]
            message = str(failure.value)
            assert f"symbol={broken['symbol']} t={broken['t']}" in message
            assert reasons[broken["kind"]] in message
        assert {b["kind"] for b in stats(bad.url)["badrows"]} == set(reasons)


def test_option_chain_snapshot(sim) -> None:
    table = resource(sim.url).option_chain_snapshot("AAA", clock=lambda: NOW)
    chain = market.chain(SEED, "AAA", NOW)
    expected = chain.table
    assert table.schema == OPTIONS_QUOTES
    assert table.num_rows == expected.num_rows > 40  # more than one page of 40
    assert table["symbol"].to_pylist() == sorted(expected["symbol"].to_pylist())
    order = pa.compute.sort_indices(expected, [("symbol", "ascending")])
    expected = expected.take(order)
    for name in ("underlying", "expiry", "strike", "right", "ts", "bid_price", "ask_price"):
        assert table[name].equals(expected[name]), name
    assert table["bid_size"].equals(expected["bid_size"])
    no_trade = chain.no_trade[order.to_numpy()]
    no_greeks = chain.no_greeks[order.to_numpy()]
    assert no_trade.any() and no_greeks.any()
    for i, row in enumerate(table.to_pylist()):
        want = expected.slice(i, 1).to_pylist()[0]
        assert row["last_price"] == (None if no_trade[i] else want["last_price"])
        for g in ("implied_volatility", "delta", "gamma", "theta", "vega", "rho"):
            assert row[g] == (None if no_greeks[i] else want[g])
        assert row["snapshot_ts"] == NOW and row["session_date"] == date(2024, 8, 12)
        assert row["underlying_price"] == Decimal(str(chain.spot))
        assert row["bid_price"] <= row["ask_price"]
        OptionsQuote(
            source=row["source"],
            occ_symbol=row["symbol"],
            underlying=row["underlying"],
            expiry=row["expiry"],
            strike=row["strike"],
            right=row["right"],
            ts_event=row["ts"],
            bid_price=row["bid_price"],
            ask_price=row["ask_price"],
            bid_size=row["bid_size"],
            ask_size=row["ask_size"],
            last_price=row["last_price"],
            underlying_price=row["underlying_price"],
            implied_volatility=row["implied_volatility"],
            delta=row["delta"],
            gamma=row["gamma"],
            theta=row["theta"],
            vega=row["vega"],
            rho=row["rho"],
        )


def test_option_bars(sim) -> None:
    contracts = market.chain(SEED, "AAA", NOW).table["symbol"].to_pylist()[::9][:4]
    table = resource(sim.url).option_bars_1m(contracts, START, END)
    assert table.schema == BARS_1M
    wanted = [
        (symbol, orjson.loads(raw))
        for symbol in sorted(contracts)
        for day in DAYS
        for raw in market.option_day(SEED, symbol, day).rows
    ]
    assert table.num_rows == len(wanted) > 0
    assert table.num_rows < 0.8 * 390 * len(DAYS) * len(contracts)  # sparse, like real ones
    assert set(table["session"].to_pylist()) == {"regular"}
    for row, (symbol, bar) in zip(table.to_pylist(), wanted, strict=True):
        assert row["symbol"] == symbol
        assert row["ts"] == datetime.fromisoformat(bar["t"])
        for column, key in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c")):
            assert row[column] == Decimal(str(bar[key]))
        assert row["volume"] == bar["v"] and row["trade_count"] == bar["n"]
        assert row["quote_volume"] == Decimal(bar["v"]) * Decimal(str(bar["vw"]))
