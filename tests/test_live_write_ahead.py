"""The session log is written ahead of every sink, proved by killing ``quant live`` (SIGKILL)
at 20 seeded random moments against ``quant sim binance``: busy (high rates), quiet (the
market paused, so no frame arrives after the last trades), right after a burst, and right
after a sink flush (a new row just appeared in ClickHouse); every other four rounds publish to
NATS too. After each kill the session is closed with ``quant replay recover``'s function
(in this process: a subprocess per kill would only add an interpreter start) and replayed:
every trade ClickHouse holds from that session, and every trade it published on NATS (``quant
nats tail`` listens throughout; a message belongs to the session whose process was alive at
its ``ts_init``), must be in the replay of its log (no row without its frames). The next round's
``quant live`` resumes from the warehouse. Last, a cleanly stopped session verifies against
ClickHouse (``quant replay verify --against-warehouse``).

Without the pipeline's write-ahead gate the quiet rounds fail: the last frames wait in the
writer's user-space buffer (fsynced only when a later record arrives), while the warehouse
sink inserts their trades once its batch is a second old.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from quant_core.replay import replay
from quant_resources.session_writer import recover
from tests.live_helpers import (
    drop,
    fresh_warehouse,
    live_env,
    start_live,
    start_sim,
    stop_all,
    verify_against_warehouse,
)
from tests.test_nats import read_lines, start_tail

pytestmark = pytest.mark.xdist_group("live")

SYMBOLS = "btcusdt,ethusdt"
KILLS = int(os.environ.get("QUANT_KILLS", "20"))
SEED = int(os.environ.get("QUANT_KILL_SEED", "14"))
MODES = ("busy", "quiet", "burst", "after-flush")


def wait_for(what: str, check, live, timeout: float = 60.0, every: float = 0.05):
    """Poll ``check`` every ``every`` s until it returns something truthy; fail naming ``what``.
    Not faster by default: each poll of the warehouse is a query that takes CPU from the
    ``quant live`` under test (two cores)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if live.proc.poll() is not None:
            raise AssertionError(f"quant live exited while waiting for {what}\n{live.explain()}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}\n{live.explain()}")


# The check of a killed session (a worker thread) and the next round both query: the
# resource keeps one client per URL, and clickhouse-connect refuses concurrent queries in
# one session.
QUERIES = threading.Lock()


def stored_trades(warehouse, session_id: str) -> set[tuple[str, int]]:
    with QUERIES:
        rows = warehouse.query_rows(
            "SELECT symbol, trade_id FROM trades WHERE session_id = {s:String}", {"s": session_id}
        )
    return {(symbol, int(trade_id)) for symbol, trade_id in rows}


def stored_count(warehouse, session_id: str) -> int:
    with QUERIES:
        return warehouse.scalar(
            "SELECT count() FROM trades WHERE session_id = {s:String}", {"s": session_id}
        )


def market(sim, **control) -> None:
    sim.request("/_sim/market", control)


def kill_at_a_random_moment(mode: str, rng: random.Random, sim, live, warehouse, sid: str):
    if mode == "busy":
        market(sim, paused=False, rate=rng.choice([1000, 3000, 6000]))
        time.sleep(rng.uniform(0.2, 2.0))
    elif mode == "quiet":  # nothing arrives after the last trades: only a timer flushes
        market(sim, paused=True)
        time.sleep(rng.uniform(0.3, 2.5))
    elif mode == "burst":
        market(sim, paused=False, rate=rng.choice([3000, 8000]))
        time.sleep(rng.uniform(0.05, 0.6))
        market(sim, paused=True)
        time.sleep(rng.uniform(0.0, 1.5))
    else:  # right after a sink flush: the moment a new batch of rows becomes visible
        market(sim, paused=False, rate=rng.choice([200, 2000]))
        before = stored_count(warehouse, sid)
        # Finer here: the kill should land within a few ms of the flush.
        wait_for("a sink flush", lambda: stored_count(warehouse, sid) > before, live, every=0.01)
    live.kill()


def check_session(warehouse, session: Path, kill: int, mode: str) -> set[tuple[str, int]]:
    """Close the killed session as ``quant replay recover`` does and replay it: every trade
    ClickHouse holds from it must be in its log. -> the trades in its log."""
    recover(session)
    logged = replay(session).trades
    in_log = set(
        zip(logged.column("symbol").to_pylist(), logged.column("trade_id").to_pylist(), strict=True)
    )
    stored = stored_trades(warehouse, session.name)
    missing = sorted(stored - in_log)
    assert not missing, (
        f"kill {kill} ({mode}): ClickHouse holds {len(missing)} of the session's {len(stored)} "
        f"trades whose frames are not in its log, e.g. {missing[:5]}"
    )
    assert stored, f"kill {kill} ({mode}): the session stored no trade"
    return in_log


def ts_ns(iso: str) -> int:
    at = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


@pytest.mark.timeout(1200)
def test_sigkill_at_random_moments_never_leaves_a_row_without_its_frames(
    tmp_path: Path, clickhouse_url: str, nats_url: str
) -> None:
    rng = random.Random(SEED)
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(tmp_path / "sim", "--rate", "300", "--seed", "31", "--symbols", SYMBOLS)
    env = live_env(sim, warehouse, tmp_path / "home")
    nats_env = live_env(sim, warehouse, tmp_path / "home", NATS_URL=nats_url)
    tail = start_tail(tmp_path, "nats", nats_url, "v1.market.trades.binance.>")
    sessions = tmp_path / "home" / "sessions"
    seen: set[str] = set()

    def new_session() -> str | None:
        found = [p.name for p in sessions.iterdir()] if sessions.exists() else []
        fresh = [name for name in found if name not in seen]
        return fresh[0] if fresh else None

    # A killed session is checked while the next round starts (it resumes from the
    # warehouse, not from the log), which halves the run time. The next round's `quant live`
    # is started preloaded: it imports its modules (most of its start-up CPU) during this
    # round and runs only once released, after this round's kill.
    def prepare(kill: int):
        if kill == KILLS:  # last, a clean session (stopped with SIGTERM once it stores)
            return start_live(tmp_path / "runs", "clean", env, SYMBOLS, preloaded=True)
        publish = kill // len(MODES) % 2 == 1
        return start_live(
            tmp_path / "runs",
            f"kill-{kill:02d}",
            nats_env if publish else env,
            SYMBOLS,
            preloaded=True,
        )

    checks = ThreadPoolExecutor(1)
    try:
        checked = []
        pending = prepare(0)
        for kill in range(KILLS):
            mode = MODES[kill % len(MODES)]
            publish = kill // len(MODES) % 2 == 1
            market(sim, paused=False, rate=300)
            began = time.time_ns()
            live = pending
            live.release()
            pending = prepare(kill + 1)
            # A generous bound: on a loaded machine the preload may still be importing.
            sid = wait_for("the session directory", new_session, live, timeout=180)
            seen.add(sid)
            # It ingests once its first trades are in ClickHouse.
            wait_for("stored trades", lambda sid=sid: stored_count(warehouse, sid), live)
            kill_at_a_random_moment(mode, rng, sim, live, warehouse, sid)
            window = (began, time.time_ns(), publish)
            future = checks.submit(check_session, warehouse, sessions / sid, kill, mode)
            checked.append((kill, mode, window, future))
        logs = [(kill, mode, window, future.result()) for kill, mode, window, future in checked]
        market(sim, paused=False, rate=300)
        live = pending
        live.release()
        sid = wait_for("the clean session's directory", new_session, live, timeout=180)
        wait_for("the clean session's stored trades", lambda: stored_count(warehouse, sid), live)
        live.signal(signal.SIGTERM)
        summary = live.summary(300)
        verify = verify_against_warehouse(summary["session_dir"], warehouse, dict(os.environ))
        assert "chain intact" in verify.stdout
        tail.signal(signal.SIGTERM)
        assert tail.wait(30) == 0
        published = [m["data"] for m in read_lines(tmp_path / "nats.jsonl")]
        assert published, "no trade was published on NATS"
        for kill, mode, (began, ended, publish), in_log in logs:
            mine = {
                (m["symbol"], m["trade_id"])
                for m in published
                if began <= ts_ns(m["ts_init"]) <= ended
            }
            assert bool(mine) == publish, (kill, mode, publish, len(mine))
            missing = sorted(mine - in_log)
            assert not missing, (
                f"kill {kill} ({mode}): {len(missing)} of the {len(mine)} trades the session "
                f"published on NATS are not in its log, e.g. {missing[:5]}"
            )
    finally:
        checks.shutdown(wait=True, cancel_futures=True)
        stop_all()
        sim.stop()
        drop(warehouse)
