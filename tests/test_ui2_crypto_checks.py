"""Every crypto_history check result names its partition: a run of a two-day range gives each
day its own evaluation of both checks, with that day's findings only (a result judging the
run's days together read "Partition —" in the UI). Real archive simulator and warehouse
endpoint, through ``dagster.materialize`` (fixtures of tests/test_crypto_history.py)."""

from __future__ import annotations

from quant_assets.crypto_history import binance_klines_1m, crypto_archive_trades
from tests.dagster_helpers import failure_text
from tests.test_crypto_history import GOOD, env, run, sim_url  # noqa: F401 (fixtures)

DAYS = GOOD[:2]


def evaluations(result) -> dict[tuple[str, str | None], object]:
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            key = (data.asset_check_key.name, data.partition)
            assert key not in found, f"two evaluations of {key}"
            found[key] = data
    return found


def test_each_day_of_a_range_run_gets_its_own_check_results(env) -> None:  # noqa: F811
    assert run(env, [binance_klines_1m], DAYS[0], DAYS[1]).success
    # The exchange says otherwise for one minute of the second day only.
    env[0]["warehouse"].command(
        "INSERT INTO binance_klines_1m SELECT * REPLACE (close + 1 AS close, version + 1 AS "
        "version) FROM binance_klines_1m WHERE symbol = 'ETHUSDT' AND session_date = "
        f"'{DAYS[1]}' ORDER BY ts LIMIT 1 OFFSET 10"
    )
    result = run(env, [crypto_archive_trades], DAYS[0], DAYS[1])
    assert result.success, failure_text(result)
    found = evaluations(result)
    checks = ("matches_binance_klines", "matches_live_trades")
    assert set(found) == {(check, day) for check in checks for day in DAYS}, sorted(found)
    good, bad = (found["matches_binance_klines", day] for day in DAYS)
    assert good.passed and not bad.passed
    assert good.metadata["differing_minutes"].value == 0
    assert bad.metadata["differing_minutes"].value == 1
    rows = [r.data for r in bad.metadata["differences"].records]
    assert [r["symbol"] for r in rows] == ["ETHUSDT"]
    # each day compares its own minutes: two symbols, at most a day of minutes each
    for day in DAYS:
        compared = found["matches_binance_klines", day].metadata["minutes_compared"].value
        assert 1000 < compared <= 2 * 1440, (day, compared)
        live = found["matches_live_trades", day]
        assert live.passed and live.metadata["live_days"].value == 0
