"""Replay: deterministic, equal to the batch aggregation, REST repair applied, every tampered
byte of the golden session caught by ``quant replay verify``, captures imported."""

from __future__ import annotations

import io
import json
import re
import shutil
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import zstandard
from typer.testing import CliRunner

from quant_cli.replay import app, import_captures
from quant_core.bars import aggregate_trades
from quant_core.decode import TradeEvent
from quant_core.replay import Pacer, ReplayDriver, compare_bars, replay
from quant_core.rest_decode import RestDecodeError, decode_agg_trades
from quant_core.sessionlog import format as fmt
from quant_core.sessionlog.format import RecordKind
from quant_core.sessionlog.reader import SessionLogError, SessionReader, segment_files
from quant_resources.session_writer import SessionWriter
from tests.golden import make_golden

GOLDEN = Path(__file__).parent / "golden"
SESSION = GOLDEN / make_golden.SESSION_ID
FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "binance_ws_cryptofeed"
POSITION = re.compile(r"(record \d+|segment header) at byte offset \d+")

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def ended_by(bars: pa.Table, stop_ms: int) -> pa.Table:
    end = pc.add(pc.cast(bars["ts"], pa.int64()), pa.scalar(60_000, pa.int64()))
    return bars.filter(pc.less_equal(end, stop_ms))


def rewrite(src: Path, root: Path, keep=lambda rec: True, stop: int | None = None) -> Path:
    """Copy a session record by record (dropping what ``keep`` refuses) into a new log."""
    reader = SessionReader(src)
    records = [r for r in reader if keep(r)]
    header = reader.info.header
    w = SessionWriter(
        root, "copy", header.venue, header.streams, header.symbols, "t", start_ns=header.start_ns
    )
    for r in records:
        w.append(r.kind, r.conn_id, r.recv_ns, r.payload, r.meta_dict() or None)
    w.close(reader.info.footer.stop_exchange_ms if stop is None else stop)
    return root / "copy"


# --- the golden session -----------------------------------------------------------------------


def test_golden_replay_matches_the_committed_expectations() -> None:
    result = replay(SESSION)
    assert compare_bars(pq.read_table(GOLDEN / "expected_bars.parquet"), result.bars) is None
    assert result.summary == json.loads((GOLDEN / "expected_summary.json").read_text())
    s = result.summary
    assert s["segments"] >= 3 and s["records"]["rest"] == 2 and s["events"]["reconnect"] == 1
    assert s["bars"] == 10 and s["events"]["rejected"] == 1 and s["events"]["control"] == 2


def test_replay_is_deterministic() -> None:
    first, second = replay(SESSION), replay(SESSION)
    assert parquet_bytes(first.bars) == parquet_bytes(second.bars)
    assert parquet_bytes(first.trades) == parquet_bytes(second.trades)
    assert first.summary == second.summary
    assert first.summary["final_digest"] == second.summary["final_digest"]


def test_golden_generation_is_deterministic(tmp_path: Path) -> None:
    regenerated = make_golden.generate(tmp_path)
    ours = [r for r in SessionReader(SESSION).records(structural=True)]
    theirs = [r for r in SessionReader(regenerated).records(structural=True)]
    assert ours == theirs
    assert replay(regenerated).summary == replay(SESSION).summary


def test_replay_equals_batch_aggregation_of_its_trades() -> None:
    result = replay(SESSION)
    batch = ended_by(aggregate_trades(result.trades), result.summary["stop_exchange_ms"])
    assert batch.num_rows == result.bars.num_rows
    assert compare_bars(batch, result.bars) is None
    assert result.trades.column_names == [
        "symbol",
        "trade_id",
        "first_trade_id",
        "last_trade_id",
        "price",
        "qty",
        "ts_event",
        "is_buyer_maker",
    ]
    assert result.trades["price"].type == pa.decimal128(38, 8)
    symbols, trade_ids = result.trades["symbol"].to_pylist(), result.trades["trade_id"].to_pylist()
    ids = list(zip(symbols, trade_ids, strict=True))
    assert len(ids) == len(set(ids))  # duplicates (reconnect and REST overlaps) dropped


def test_rest_repair_is_applied(tmp_path: Path) -> None:
    result = replay(SESSION)
    assert result.summary["events"]["rest_trade"] > 0
    # The gap held its bars (as live does) until the repair: final once, never corrected.
    assert max(result.bars["version"].to_pylist()) == 1
    without = replay(rewrite(SESSION, tmp_path, keep=lambda r: r.kind != RecordKind.REST))
    missing = result.summary["events"]["rest_trade"] - result.summary["events"]["duplicate_trade"]
    assert without.trades.num_rows < result.trades.num_rows
    assert result.trades.num_rows - without.trades.num_rows >= missing
    diff = compare_bars(pq.read_table(GOLDEN / "expected_bars.parquet"), without.bars)
    assert diff is not None and "BTCUSDT 2024-08-08T14:32" in diff


def test_paced_replay_uses_the_virtual_clock() -> None:
    now = [1000.0]
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    paced = replay(SESSION, speed=20.0, sleep=sleep, clock=lambda: now[0])
    fast = replay(SESSION)
    span = paced.summary["span_s"]
    assert sum(sleeps) == pytest.approx(span / 20.0, abs=1e-6)
    assert len(sleeps) > 100
    assert parquet_bytes(paced.bars) == parquet_bytes(fast.bars)
    with pytest.raises(ValueError):
        Pacer(speed=0)


def test_unclosed_session_and_the_stop_time(tmp_path: Path) -> None:
    reader = SessionReader(SESSION)
    recs = list(reader)
    header = reader.info.header
    expected = pq.read_table(GOLDEN / "expected_bars.parquet")

    def session(name: str, stop: int | None, clean: bool = True) -> Path:
        w = SessionWriter(tmp_path, name, "binance", header.streams, header.symbols, "t")
        for r in recs:
            w.append(r.kind, r.conn_id, r.recv_ns, r.payload, r.meta_dict() or None)
        w.sync()
        if stop != "open":
            w.close(stop, clean=clean)
        return tmp_path / name

    with pytest.raises(SessionLogError, match="unclosed"):
        replay(session("open", "open"))
    # recovered without a stop time: the bars the watermark finalised (the running minute
    # 14:35 stays out, as it does with the recorded stop)
    recovered = replay(session("recovered", None, clean=False))
    assert compare_bars(expected, recovered.bars) is None
    assert recovered.summary["clean"] is False and recovered.summary["stop_exchange_ms"] is None
    t0 = make_golden.T0_MS
    assert replay(session("early", t0 + 240_000)).bars.num_rows == 8  # 14:30..14:33
    late = replay(session("late", t0 + 360_000)).bars  # 14:35 ended too: flushed
    assert late.num_rows == 12
    assert compare_bars(expected, ended_by(late, t0 + 300_000)) is None


# --- CLI --------------------------------------------------------------------------------------


def test_cli_verify_golden_is_identical_across_runs() -> None:
    outputs = []
    for _ in range(2):
        res = cli("verify", SESSION, "--golden", GOLDEN, "--json")
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc.pop("timing")["events_per_s"] > 0
        outputs.append(doc)
    assert outputs[0] == outputs[1]
    assert (
        outputs[0]["final_digest"]
        == json.loads((GOLDEN / "expected_summary.json").read_text())["final_digest"]
    )
    res = cli("verify", SESSION)
    assert res.exit_code == 0 and "chain intact" in res.stdout


def test_every_single_byte_change_is_detected(tmp_path: Path) -> None:
    session = tmp_path / SESSION.name
    shutil.copytree(SESSION, session)
    positions = 0
    for seg in segment_files(session):
        original = seg.read_bytes()
        size = len(original)
        # the whole zstd frame header and trailer, then every 37th byte of the body
        offsets = sorted({*range(min(24, size)), *range(size - 8, size), *range(0, size, 37)})
        for i, offset in enumerate(offsets):
            damaged = bytearray(original)
            damaged[offset] ^= (0x01, 0x80, 0xFF, 0x24)[i % 4]
            seg.write_bytes(bytes(damaged))
            res = cli("verify", session, "--golden", GOLDEN)
            assert res.exit_code == 1, (seg.name, offset)
            assert POSITION.search(res.output), (seg.name, offset, res.output)
            assert seg.name in res.output
            positions += 1
        seg.write_bytes(original)
    assert positions >= 400
    assert cli("verify", session, "--golden", GOLDEN).exit_code == 0  # restored: intact again


def test_verify_names_the_first_differing_bar(tmp_path: Path) -> None:
    expected = pq.read_table(GOLDEN / "expected_bars.parquet")
    close = expected["close"].to_pylist()
    close[3] += 1
    altered = expected.set_column(
        expected.schema.get_field_index("close"), "close", pa.array(close, expected["close"].type)
    )
    pq.write_table(altered, tmp_path / "expected_bars.parquet")
    res = cli("verify", SESSION, "--golden", tmp_path)
    assert res.exit_code == 1
    assert "bar BTCUSDT 2024-08-08T14:33:00+00:00" in res.output and "close" in res.output
    res = cli("verify", SESSION, "--golden", tmp_path / "nowhere")
    assert res.exit_code == 2


def test_cli_bars_writes_the_recomputed_bars(tmp_path: Path) -> None:
    out = tmp_path / "bars.parquet"
    res = cli("bars", SESSION, "--out", out)
    assert res.exit_code == 0, res.output
    assert compare_bars(pq.read_table(GOLDEN / "expected_bars.parquet"), pq.read_table(out)) is None
    again = tmp_path / "again.parquet"
    cli("bars", SESSION, "--out", again)
    assert out.read_bytes() == again.read_bytes()


@pytest.mark.parametrize("where", ["/proc/nope/x.parquet", "DIR"])
def test_cli_bars_to_a_path_it_cannot_write_says_so(tmp_path: Path, where: str) -> None:
    out = tmp_path if where == "DIR" else Path(where)
    res = runner.invoke(app, ["bars", str(SESSION), "--out", str(out)])
    assert res.exit_code == 1
    assert res.exception is None or isinstance(res.exception, SystemExit)  # no traceback
    assert f"cannot write {out}: " in res.output
    reason = "it is a directory" if where == "DIR" else "No such file or directory"
    assert reason in res.output


def test_compare_bars_descriptions() -> None:
    bars = pq.read_table(GOLDEN / "expected_bars.parquet")
    assert compare_bars(bars, bars) is None
    assert "is expected but missing" in compare_bars(bars, bars.slice(1))
    assert "is not expected" in compare_bars(bars.slice(1), bars)
    with pytest.raises(ValueError, match="twice"):
        compare_bars(pa.concat_tables([bars, bars]), bars)


# --- REST decoding ----------------------------------------------------------------------------


def test_rest_aggtrades_decoding() -> None:
    body = (
        b'[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,'
        b'"T":1498793709153,"m":true,"M":true}]'
    )
    (ev,) = decode_agg_trades(body, "bnbbtc")
    assert ev == TradeEvent(
        "BNBBTC", "aggTrade", 26129, 27781, 27781, 1_633_102, 470_443_515, 1498793709153, True
    )
    bad = {
        b'{"code":-1121,"msg":"Invalid symbol."}': "not a JSON array",
        b"[1]": "row 0",
        b'[{"a":1,"p":"1","q":"1","f":1,"l":1,"T":1,"m":true},{"a":2}]': "row 1: field 'f'",
        b'[{"a":1,"p":"-1","q":"1","f":1,"l":1,"T":1,"m":true}]': "row 0: price",
        b'[{"a":1,"p":"1","q":"1","f":2,"l":1,"T":1,"m":true}]': "first trade id",
        b'[{"a":1,"p":"1","q":"1","f":1,"l":1,"T":1,"m":1}]': "'m'",
        b"[{": "not JSON",
    }
    for raw, message in bad.items():
        with pytest.raises(RestDecodeError, match=re.escape(message)):
            decode_agg_trades(raw, "BTCUSDT")
    pipeline = ReplayDriver()
    pipeline.on_rest(b"[1]", {"path": "/api/v3/aggTrades", "symbol": "BTCUSDT"})
    pipeline.on_rest(b"[]", {"path": "/api/v3/klines"})
    assert pipeline.counts["rest_rejected"] == 1 and pipeline.counts["rest_other"] == 1


# --- import -----------------------------------------------------------------------------------


def test_import_cryptofeed_fixture(tmp_path: Path) -> None:
    res = cli(
        "import",
        FIXTURES / "binance_spot.ws",
        "--format",
        "cryptofeed",
        "--out",
        tmp_path,
        "--session-id",
        "spot",
    )
    assert res.exit_code == 0, res.output
    reader = SessionReader(tmp_path / "spot")
    records = list(reader)
    assert reader.info.header.symbols == ("BTCUSDT", "ETHUSDT")
    assert "btcusdt@aggTrade" in reader.info.header.streams
    assert records[0].kind == RecordKind.CONN and records[0].recv_ns == 1723127400000100000
    assert [r.recv_ns for r in records[1:]] == [
        1723127400125000000,
        1723127400225000000,
        1723127400325000000,
        1723127400425000000,
        1723127460001000000,
    ]
    raw_lines = (FIXTURES / "binance_spot.ws").read_bytes().splitlines()[1:]
    assert [r.payload for r in records[1:]] == [line.split(b": ", 1)[1] for line in raw_lines]
    result = replay(tmp_path / "spot")
    assert result.summary["events"]["trade"] == 2 and result.summary["events"]["book_ticker"] == 1
    assert cli("verify", tmp_path / "spot").exit_code == 0


def test_import_hftbacktest_fixture(tmp_path: Path) -> None:
    res = cli("import", FIXTURES / "hftbacktest.txt", "--format", "hftbacktest", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    records = list(SessionReader(session))
    assert [r.recv_ns for r in records] == [1723127400125000000, 1723127400325000000]
    result = replay(session)
    assert result.summary["events"]["trade"] == 1 and result.summary["events"]["book_ticker"] == 1
    assert result.trades["price"].to_pylist()[0] == Decimal("56123.45")


def test_import_merges_files_by_receive_time(tmp_path: Path) -> None:
    closed = import_captures(
        "cryptofeed", [FIXTURES / "binance_spot.ws", FIXTURES / "binance_futures.ws"], tmp_path
    )
    records = list(SessionReader(closed.session_dir))
    times = [r.recv_ns for r in records]
    assert times == sorted(times)
    assert {r.conn_id for r in records} == {1, 2}


@pytest.mark.parametrize("fmt", ["cryptofeed", "hftbacktest"])
def test_import_malformed_line_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    bad = tmp_path / "bad.capture"
    if fmt == "cryptofeed":
        good = (FIXTURES / "binance_spot.ws").read_bytes().splitlines()
        bad.write_bytes(b"\n".join([*good[:3], b"1723127400.5 no separator here", *good[3:]]))
        line = "line 4"
    else:
        good = (FIXTURES / "hftbacktest.txt").read_bytes().splitlines()
        bad.write_bytes(b"\n".join([good[0], b"notanumber {}", good[1]]))
        line = "line 2"
    out = tmp_path / "out"
    res = cli("import", bad, "--format", fmt, "--out", out, "--session-id", "x")
    assert res.exit_code == 1
    assert str(bad) in res.output and line in res.output
    assert not out.exists() or list(out.iterdir()) == []  # no session, no temp directory


@pytest.mark.samples
@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is absent")
@pytest.mark.parametrize("name", ["BINANCE.ws.1.0", "BINANCE_FUTURES.ws.1.0"])
def test_import_and_replay_real_samples(tmp_path: Path, name: str) -> None:
    res = cli("import", SAMPLES / name, "--format", "cryptofeed", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    result = replay(session)
    lines = [line for line in (SAMPLES / name).read_bytes().splitlines()[1:] if line.strip()]
    assert result.summary["records"]["ws"] == len(lines)
    assert result.summary["events"]["trade"] > 0
    batch = ended_by(aggregate_trades(result.trades), result.summary["stop_exchange_ms"])
    assert compare_bars(batch, result.bars) is None
    if name.startswith("BINANCE_FUTURES"):
        assert result.bars.num_rows > 0
    again = replay(session)
    assert parquet_bytes(again.bars) == parquet_bytes(result.bars)
    assert orjson.loads(orjson.dumps(result.summary)) == again.summary


def same_error(session: Path) -> SessionLogError:
    """Replays ``session`` serially and in parallel: both fail with the same words."""
    with pytest.raises(SessionLogError) as serial_error:
        replay(session, parallel=False)
    with pytest.raises(SessionLogError) as parallel_error:
        replay(session, parallel=True)
    assert str(parallel_error.value) == str(serial_error.value)
    return serial_error.value


def flip_byte(seg: Path) -> None:
    raw = zstandard.ZstdDecompressor().decompress(seg.read_bytes())
    damaged = bytearray(raw)
    damaged[len(raw) // 2] ^= 0x40
    seg.write_bytes(zstandard.ZstdCompressor().compress(bytes(damaged)))


@pytest.mark.parametrize("layout", ["segments", "one segment"])
def test_parallel_verification_gives_the_serial_result(tmp_path: Path, layout: str) -> None:
    """Several segments are sharded over worker processes; a single one is verified in a
    second process while this one decodes. Either way: the serial result, or its error."""
    if layout == "segments":
        session = tmp_path / SESSION.name
        shutil.copytree(SESSION, session)
    else:
        session = rewrite(SESSION, tmp_path)
    assert (len(segment_files(session)) > 1) == (layout == "segments")
    serial, parallel = replay(session, parallel=False), replay(session, parallel=True)
    assert parallel.summary == serial.summary and parallel.rejects == serial.rejects
    assert parallel.info == serial.info == SessionReader(session).verify()
    assert parquet_bytes(parallel.bars) == parquet_bytes(serial.bars)
    assert parquet_bytes(parallel.trades) == parquet_bytes(serial.trades)
    with pytest.raises(ValueError, match="paced"):
        replay(session, parallel=True, speed=2.0)
    # A flipped byte inside a record: the error names the file and the position.
    seg = segment_files(session)[-1]
    flip_byte(seg)
    error = same_error(session)
    assert error.record is not None and seg.name in str(error)


def test_sharded_segments_must_link_as_in_the_serial_pass(tmp_path: Path) -> None:
    """Each segment verifies alone (its header says where its chain starts); what links them
    is checked after, and a break is reported in the serial pass's words."""
    session = tmp_path / SESSION.name
    shutil.copytree(SESSION, session)
    files = segment_files(session)
    aside = tmp_path / "aside"
    aside.mkdir()
    # Without session.json (it is optional) only the segments themselves can tell.
    manifest = session / "session.json"
    manifest.rename(aside / manifest.name)

    files[1].rename(aside / files[1].name)  # a missing middle segment
    assert "missing or reordered segment" in str(same_error(session))
    (aside / files[1].name).rename(files[1])

    files[0].rename(aside / files[0].name)  # a missing first segment
    assert "earlier segments are missing" in str(same_error(session))
    (aside / files[0].name).rename(files[0])

    files[-1].rename(aside / files[-1].name)  # the footer's segment missing
    assert "no footer" in str(same_error(session))
    (aside / files[-1].name).rename(files[-1])

    files[1].rename(aside / "b")  # two segments swapped
    files[2].rename(files[1])
    (aside / "b").rename(files[2])
    assert "segment index" in str(same_error(session))
    files[1].rename(aside / "b")
    files[2].rename(files[1])
    (aside / "b").rename(files[2])

    # A footer whose totals are wrong, re-chained so that every digest holds.
    intact = files[-1].read_bytes()
    raw = zstandard.ZstdDecompressor().decompress(intact)
    _, pos, digest = fmt.decode_header(raw)
    out = raw[:pos]
    while pos < len(raw):
        start = pos
        rec, pos, after = fmt.decode_record(raw, pos, digest)
        if rec.kind == RecordKind.FOOTER:
            meta = orjson.loads(rec.meta)
            meta["counts"]["ws"] += 1
            enc, after = fmt.encode_record(
                digest, rec.kind, rec.seq, rec.recv_ns, rec.conn_id, orjson.dumps(meta), rec.payload
            )
            out += enc
        else:
            out += raw[start:pos]
        digest = after
    files[-1].write_bytes(zstandard.ZstdCompressor().compress(out))
    assert "footer counts=" in str(same_error(session))
    files[-1].write_bytes(intact)
    replay(session, parallel=True)

    (aside / manifest.name).rename(manifest)
    doc = orjson.loads(manifest.read_bytes())
    doc["final_digest"] = "00" * 32  # the segments link, the manifest disagrees
    manifest.write_bytes(orjson.dumps(doc))
    assert "final_digest" in str(same_error(session))


def test_bursts_with_futures_book_tickers_equal_frame_by_frame() -> None:
    """Futures book tickers carry an exchange time that moves the watermark between trades:
    a burst holding them takes the frames in order, with the same result."""
    from tests.test_decode import agg
    from tests.test_decode_bursts import book

    t0 = 1723127400000
    frames = []
    for i in range(300):
        frames.append(agg(a=i, f=10 + i, l=10 + i, T=t0 + i * 700))
        frames.append(book(u=i, e="bookTicker", T=t0 + i * 700 + 5))
    frames.insert(100, b"{not json")
    # Far ahead on the exchange clock: the trades after it are beyond retention, dropped late.
    frames.insert(400, book(u=10_000, e="bookTicker", T=t0 + 2 * 86_400_000))
    one, many = ReplayDriver(("BTCUSDT",)), ReplayDriver(("BTCUSDT",))
    for frame in frames:
        one.on_ws(frame)
    many.on_ws_many(frames[:150])
    many.on_ws_many(frames[150:])
    assert many.counts == one.counts and one.counts["rejected"] == 1
    assert one.counts["book_ticker"] == 301
    assert many.aggregator.dropped_late == one.aggregator.dropped_late > 0
    stop = t0 + 300 * 700
    assert parquet_bytes(many.finish(stop)) == parquet_bytes(one.finish(stop))
