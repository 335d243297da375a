"""LakeResource on a local folder and on the S3 server of the test services (same tests)."""

from __future__ import annotations

import datetime as dt
import socket
import traceback
import uuid
from decimal import Decimal
from pathlib import Path

import boto3
import botocore.exceptions
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import quant_resources.lake_client as lake_module  # klive: the lake code is there
from quant_resources.lake import TEMP_PREFIX, LakeError, LakeResource

DAY = dt.date(2024, 8, 8)
SECRET = "sEcReT-must-not-leak-7f3a"


def _table(n: int = 5, offset: int = 0) -> pa.Table:
    start = dt.datetime(2024, 8, 8, 13, 30, tzinfo=dt.UTC)
    return pa.table(
        {
            "ts_event": pa.array(
                [start + dt.timedelta(minutes=i) for i in range(n)], pa.timestamp("ns", "UTC")
            ),
            "close": pa.array([Decimal(f"{100 + offset + i}.25") for i in range(n)]),
            "volume": pa.array([10 * i + offset for i in range(n)], pa.int64()),
            "note": pa.array([None if i % 2 else f"n{i}" for i in range(n)], pa.string()),
        }
    )


@pytest.fixture(params=["file", "s3"])
def lake(request, tmp_path, monkeypatch) -> LakeResource:
    if request.param == "file":
        return LakeResource(url=f"file://{tmp_path / 'lake'}")
    for name, value in request.getfixturevalue("s3_env").items():
        monkeypatch.setenv(name, value)
    bucket = request.getfixturevalue("s3_env")["QUANT_TEST_S3_BUCKET"]
    # A fresh prefix per test: the bucket is shared by every test and both xdist workers.
    return LakeResource(url=f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}")


def _raw_keys(lake: LakeResource) -> list[str]:
    """Every stored object, temp ones included, bypassing the resource's own filtering."""
    url = lake.resolved_url
    if url.startswith("file://"):
        root = Path(url.removeprefix("file://"))
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    response = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    return sorted(item["Key"][len(prefix) + 1 :] for item in response.get("Contents", []))


def test_round_trip_preserves_the_table(lake) -> None:
    table = _table()
    key = lake.key("bars_1m", "alpaca", DAY, "spy")
    location = lake.write_parquet(key, table)
    assert location.endswith(key) and location.startswith(lake.resolved_url)
    assert lake.exists(key)
    assert lake.read_parquet(key).equals(table)


def test_overwrite_replaces_the_object(lake) -> None:
    key = lake.key("bars_1m", "alpaca", DAY, "SPY")
    lake.write_parquet(key, _table(5))
    lake.write_parquet(key, _table(3, offset=50))
    assert lake.read_parquet(key).equals(_table(3, offset=50))
    assert _raw_keys(lake) == [key]


def test_hive_key_layout() -> None:
    assert (
        LakeResource.key("bars_1m", "alpaca", DAY, "spy")
        == "bars_1m/source=alpaca/date=2024-08-08/symbol=SPY/part.parquet"
    )
    assert (
        LakeResource.key("session_logs", "binance", DAY, part="0001.parquet")
        == "session_logs/source=binance/date=2024-08-08/0001.parquet"
    )
    # A slash in a symbol is percent-encoded (as Hive does), never a new folder.
    assert LakeResource.key("trades", "binance", DAY, "BTC/USDT").split("/")[3] == (
        "symbol=BTC%2FUSDT"
    )


def test_hive_layout_is_readable_as_a_partitioned_dataset(tmp_path) -> None:
    lake = LakeResource(url=f"file://{tmp_path}")
    lake.write_parquet(lake.key("trades", "binance", DAY, "BTC/USDT"), _table(2))
    lake.write_parquet(lake.key("trades", "binance", DAY, "ETH-USDT"), _table(3))
    dataset = ds.dataset(tmp_path / "trades", format="parquet", partitioning="hive")
    rows = dataset.to_table().select(["source", "date", "symbol"]).to_pylist()
    symbols = sorted({row["symbol"] for row in rows})
    assert symbols == ["BTC/USDT", "ETH-USDT"]
    assert {row["source"] for row in rows} == {"binance"}
    assert len(rows) == 5


def test_list_by_prefix_and_delete_prefix(lake) -> None:
    keys = [
        lake.key("bars_1m", "alpaca", DAY, "SPY"),
        lake.key("bars_1m", "alpaca", DAY, "AAPL"),
        lake.key("bars_1m", "alpaca", DAY + dt.timedelta(days=1), "SPY"),
        lake.key("bars_1m", "synthetic", DAY, "SPY"),
        lake.key("bars_1d", "alpaca", DAY, "SPY"),
    ]
    for key in keys:
        lake.write_parquet(key, _table(1))
    partition = "bars_1m/source=alpaca/date=2024-08-08/"
    assert lake.list(partition) == sorted(keys[:2])
    assert lake.list("bars_1m/source=alpaca/date=2024-08") == sorted(keys[:3])
    assert lake.list("") == sorted(keys)
    assert lake.list("nothing/") == []

    assert lake.delete_prefix(partition) == 2
    assert lake.list("") == sorted(keys[2:])
    assert not lake.exists(keys[0])
    with pytest.raises(ValueError, match="non-empty prefix"):
        lake.delete_prefix("")


def test_missing_object(lake) -> None:
    key = lake.key("bars_1m", "alpaca", DAY, "NONE")
    assert not lake.exists(key)
    with pytest.raises(FileNotFoundError, match="symbol=NONE"):
        lake.read_parquet(key)


def test_no_temp_objects_after_success(lake) -> None:
    keys = [lake.key("bars_1m", "alpaca", DAY, s) for s in ("SPY", "QQQ")]
    for key in keys:
        lake.write_parquet(key, _table())
    assert _raw_keys(lake) == sorted(keys)


def test_failure_while_writing_keeps_previous_object(lake, monkeypatch) -> None:
    key = lake.key("bars_1m", "alpaca", DAY, "SPY")
    lake.write_parquet(key, _table())

    def half_written(table, sink, **kwargs):
        sink.write(b"PAR1 truncated")
        raise OSError("disk full (simulated)")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="simulated"):
        patch.setattr(lake_module.pq, "write_table", half_written)
        lake.write_parquet(key, _table(2, offset=9))
    assert lake.read_parquet(key).equals(_table())
    assert _raw_keys(lake) == [key]


def test_failure_while_publishing_keeps_previous_object(lake, monkeypatch) -> None:
    """The step that moves the temp object onto the final key fails (rename / server copy)."""
    key = lake.key("bars_1m", "alpaca", DAY, "SPY")
    lake.write_parquet(key, _table())

    def fail_replace(src, dst):
        raise OSError("rename failed (simulated)")

    def fail_copy(**kwargs):
        error = {"Error": {"Code": "InternalError", "Message": "simulated"}}
        raise botocore.exceptions.ClientError(error, "CopyObject")

    with monkeypatch.context() as patch:
        if lake.resolved_url.startswith("file://"):
            patch.setattr(lake_module.os, "replace", fail_replace)
            expected = OSError
        else:
            patch.setattr(lake._store().client, "copy_object", fail_copy)
            expected = LakeError
        with pytest.raises(expected, match=r"simulated|InternalError"):
            lake.write_parquet(key, _table(2, offset=9))
    assert lake.read_parquet(key).equals(_table())
    assert _raw_keys(lake) == [key]


@pytest.mark.parametrize(
    ("args", "field", "value"),
    [
        (("Bars", "alpaca", DAY), "dataset", "'Bars'"),
        (("bars", "Alpaca", DAY), "source", "'Alpaca'"),
        (("bars", "al-paca", DAY), "source", "'al-paca'"),
        (("bars", "alpaca", "2024-08-08"), "date", "'2024-08-08'"),
        (("bars", "alpaca", dt.datetime(2024, 8, 8, 1)), "date", "datetime.datetime(2024, 8, 8"),
        (("bars", "alpaca", DAY, "SPY;DROP"), "symbol", "'SPY;DROP'"),
        (("bars", "alpaca", DAY, "SPY\n"), "symbol", "'SPY\\n'"),
        (("bars", "alpaca\n", DAY), "source", "'alpaca\\n'"),
        (("bars", "alpaca", DAY, "../etc"), "symbol", "'../etc'"),
        (("bars", "alpaca", DAY, ""), "symbol", "''"),
        (("bars", "alpaca", DAY, "SPY", "../x.parquet"), "part", "'../x.parquet'"),
        (("bars", "alpaca", DAY, "SPY", ".tmp-x.parquet"), "part", "'.tmp-x.parquet'"),
    ],
)
def test_bad_key_inputs_are_rejected(args, field, value) -> None:
    with pytest.raises(ValueError) as info:
        LakeResource.key(*args)
    assert f"invalid {field} {value}" in str(info.value)


@pytest.mark.parametrize("key", ["../outside.parquet", "/abs.parquet", "a//b.parquet", "dir/"])
def test_bad_raw_keys_write_nothing(lake, key) -> None:
    with pytest.raises(ValueError, match="invalid lake key"):
        lake.write_parquet(key, _table())
    assert _raw_keys(lake) == []


def test_temp_names_cannot_be_written_directly(lake) -> None:
    with pytest.raises(ValueError, match="temp"):
        lake.write_parquet(f"bars/{TEMP_PREFIX}x.parquet", _table())


def test_missing_bucket_is_a_clear_error_without_secrets(s3_env, monkeypatch) -> None:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto accepts any credentials
    bucket = f"quant-missing-{uuid.uuid4().hex[:8]}"
    lake = LakeResource(url=f"s3://{bucket}/lake")
    operations = [
        lambda: lake.write_parquet("a/b.parquet", _table()),
        lambda: lake.read_parquet("a/b.parquet"),
        lambda: lake.exists("a/b.parquet"),
        lambda: lake.list("a/"),
    ]
    for operation in operations:
        with pytest.raises(LakeError) as info:
            operation()
        message = str(info.value)
        assert bucket in message and s3_env["AWS_ENDPOINT_URL"] in message
        assert SECRET not in "".join(traceback.format_exception(info.value))


def test_unreachable_endpoint_is_a_clear_error(s3_env, monkeypatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    lake = LakeResource(url="s3://somewhere/lake")
    with pytest.raises(LakeError, match="unreachable") as info:
        lake.list("")
    assert "'somewhere'" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))


def test_url_resolution(quant_home, monkeypatch) -> None:
    monkeypatch.delenv("LAKE_URL", raising=False)
    assert LakeResource().resolved_url == f"file://{quant_home / 'lake'}"
    monkeypatch.setenv("LAKE_URL", "file:///srv/lake")
    assert LakeResource().resolved_url == "file:///srv/lake"
    assert LakeResource(url="s3://b/p").resolved_url == "s3://b/p"


def test_default_lake_writes_under_quant_home(quant_home, monkeypatch) -> None:
    monkeypatch.delenv("LAKE_URL", raising=False)
    lake = LakeResource()
    lake.write_parquet(lake.key("bars_1m", "synthetic", DAY, "SPY"), _table(1))
    assert (quant_home / "lake/bars_1m/source=synthetic/date=2024-08-08/symbol=SPY").is_dir()


@pytest.mark.parametrize(
    "url", ["ftp://x/y", "s3://", "s3://AKIA:hunter2@bucket/p", "s3://bucket:9000/p"]
)
def test_bad_lake_urls(url) -> None:
    with pytest.raises(LakeError) as info:
        LakeResource(url=url).list("")
    assert "hunter2" not in str(info.value)
