"""The managed Redis (quant_dev.serving.RedisServer, which `make demo`, `make dev` and the tests
start) keeps the stream of final bars across a restart, even a crash, and stays closed: loopback,
password, every file in its own folder, and no client can move its files elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from quant_dev.serving import RedisServer
from quant_resources.latest_store import bars_stream_key, latest_key

ENTRY = {"symbol": "BTCUSDT", "version": "1", "bar": '{"close": "42000.5"}'}


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_a_bar_stream_entry_survives_a_restart(tmp_path: Path, how: str) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    stream = bars_stream_key("binance", "1m")
    latest = latest_key("binance", "BTCUSDT", "bar")
    try:
        client = _client(server)
        entry_id = client.xadd(stream, ENTRY, id="1700000000000-0")
        client.set(latest, ENTRY["bar"], ex=86_400)
        client.close()
        if how == "crash":  # SIGKILL: no shutdown save; only what was fsynced is there
            server.child.kill()
        else:
            server.stop()
        server.start()
        client = _client(server)
        entries = client.xrange(stream)
        assert [(i, {k.decode(): v.decode() for k, v in f.items()}) for i, f in entries] == [
            (entry_id, ENTRY)
        ]
        assert client.get(latest).decode() == ENTRY["bar"]
        assert 0 < client.ttl(latest) <= 86_400  # the TTL policy survives too
        client.close()
    finally:
        server.stop()


def test_the_managed_redis_is_closed_and_keeps_its_files_in_its_folder(
    tmp_path: Path, monkeypatch
) -> None:
    folder = tmp_path / "home" / "redis"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative path in its config would land here
    server = RedisServer(folder)
    server.start()
    try:
        client = _client(server)
        client.xadd(bars_stream_key("binance", "1m"), ENTRY)
        config = client.config_get("*")
        assert config["bind"] == "127.0.0.1"
        assert config["protected-mode"] == "yes"
        assert config["appendonly"] == "yes" and config["appendfsync"] == "always"
        assert Path(config["dir"]) == folder
        # A client cannot point its files elsewhere (the classic CONFIG SET dir attack).
        for name, value in (("dir", str(elsewhere)), ("dbfilename", "x.rdb")):
            with pytest.raises(redis.ResponseError, match="protected"):
                client.config_set(name, value)
        with pytest.raises(redis.ResponseError):
            client.execute_command("DEBUG", "SLEEP", "0")
        client.close()
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("anything")
        anonymous.close()
    finally:
        server.stop()
    assert list(elsewhere.iterdir()) == []
    assert folder.stat().st_mode & 0o777 == 0o700
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.parent.name == "appendonly" for p in files), files
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, path  # nobody but the owner reads its data
    assert set(os.listdir(tmp_path)) == {"home", "cwd"}
