"""Session logs under hostile conditions: a session directory is locked while a writer lives
(recover is refused, read-only verification says the session is still being written), and
a compressed segment crafted to expand to over a GiB is refused at a named record with
bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zstandard

from quant_core.sessionlog import format as fmt
from quant_core.sessionlog.reader import (
    SessionLogError,
    SessionReader,
    segment_files,
    unverified_records,
)
from quant_dev.processes import Child
from quant_resources.session_lock import LOCK_FILE, SessionLocked, holder
from quant_resources.session_writer import SessionWriter, recover
from tests.test_sessionlog import make_session, raw_segment, record_offsets

ROOT = Path(__file__).resolve().parents[1]
QUANT = [sys.executable, "-m", "quant_cli.main"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# A writer in another process: appends and fsyncs 300 records, says so, appends more as told,
# and dies without closing (os._exit: a crash) when stdin closes.
WRITER = textwrap.dedent(
    """
    import os, sys
    from quant_resources.session_writer import SessionWriter
    w = SessionWriter(sys.argv[1], "live", "binance", [], [], "t", checkpoint_every=50)
    for i in range(300):
        w.append("ws", 1, i, b"frame-%d" % i)
    w.sync()
    print("ready", flush=True)
    for line in sys.stdin:
        for i in range(int(line)):
            w.append("ws", 1, 10**6 + i, b"more-%d" % i)
        w.sync()
        print("appended", flush=True)
    os._exit(0)
    """
)


def files_of(session: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(session.iterdir())}


def quant(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*QUANT, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV
    )


def test_recover_refuses_a_session_another_process_is_writing(tmp_path: Path) -> None:
    writer = Child(
        "a session writer",
        [sys.executable, "-c", WRITER, str(tmp_path)],
        r"^ready$",
        environ=ENV,
        cwd=ROOT,
        stdin=True,
    )
    try:
        session = tmp_path / "live"
        assert holder(session) == writer.pid
        before = files_of(session)
        with pytest.raises(SessionLocked) as info:
            recover(session)
        assert info.value.pid == writer.pid
        assert str(session) in str(info.value) and str(writer.pid) in str(info.value)
        cli = quant("replay", "recover", str(session))
        assert cli.returncode == 1
        assert f"locked by process {writer.pid}" in cli.stderr and "recover refused" in cli.stderr
        assert files_of(session) == before  # the writer's files are untouched
        # read-only verification is allowed, and says the session is open
        verify = quant("replay", "verify", str(session))
        assert verify.returncode == 0, verify.stderr
        assert f"still being written by process {writer.pid}" in verify.stdout
        assert "chain intact up to record 30" in verify.stdout  # 300 + 6 checkpoints, at least
        compare = quant("replay", "verify", str(session), "--against-warehouse")
        assert compare.returncode == 1 and "still being written" in compare.stderr
        # the writer was not disturbed: it goes on appending to the same segment
        writer.send("50\n")
        writer.wait_for("its answer", lambda: "appended\n" in writer.lines, 30)
        writer.close_stdin()  # crash: no close, no footer
        assert writer.wait(30) == 0
    finally:
        if writer.running():
            writer.kill()
    assert holder(session) is None  # the kernel dropped the dead writer's lock
    result = recover(session)
    assert not result.already_closed
    payloads = [r.payload for r in SessionReader(session)]
    assert payloads == [b"frame-%d" % i for i in range(300)] + [b"more-%d" % i for i in range(50)]


def test_a_second_open_file_description_in_the_same_process_is_refused(tmp_path: Path) -> None:
    w = SessionWriter(tmp_path, "s", "binance", [], [], "t")
    w.append("ws", 1, 1, b"x")
    w.sync()
    session = tmp_path / "s"
    before = files_of(session)
    with pytest.raises(SessionLocked, match=f"locked by process {os.getpid()}"):
        recover(session)
    assert files_of(session) == before
    w.append("ws", 1, 2, b"y")  # the writer still holds its files and lock
    w.close(None)
    assert holder(session) is None and (session / LOCK_FILE).exists()
    assert recover(session).already_closed  # a closed session: recover is a no-op
    assert [r.payload for r in SessionReader(session)] == [b"x", b"y"]


def test_recover_keeps_the_lock_while_it_works(tmp_path: Path, monkeypatch) -> None:
    w = SessionWriter(tmp_path, "s", "binance", [], [], "t")
    w.append("ws", 1, 1, b"x")
    w.sync()
    w.lock.release()  # a crash: the kernel drops a dead writer's lock
    session = tmp_path / "s"
    close, seen = SessionWriter.close, []

    def probing_close(self, *args, **kwargs):
        seen.append(holder(session))  # probed through a second open file description
        return close(self, *args, **kwargs)

    monkeypatch.setattr(SessionWriter, "close", probing_close)
    recover(session)
    assert seen == [os.getpid()]
    assert holder(session) is None


# --- decompression bombs ----------------------------------------------------------------------

BOMB_GIB = 1.1


def bomb(tmp_path: Path) -> tuple[Path, int]:
    """A compressed segment: a real header and 40 intact records, then 1.1 GiB of zeros, as
    one zstd frame of about 32 KB. -> (file, offset where the zeros begin)."""
    session, _ = make_session(tmp_path / "src", n=40, checkpoint_every=1000)
    raw = raw_segment(segment_files(session)[0])
    offsets = record_offsets(raw)
    start = offsets[40]  # the footer: replaced by zeros
    zeros = int(BOMB_GIB * (1 << 30))
    path = tmp_path / "seg-000001.qlog.zst"
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    with open(path, "wb") as fh, cctx.stream_writer(fh, size=start + zeros) as out:
        out.write(raw[:start])
        block = bytes(1 << 24)
        for _ in range(zeros // len(block)):
            out.write(block)
        out.write(bytes(zeros % len(block)))
    return path, start


MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from quant_core.sessionlog.reader import SessionLogError, SessionReader, unverified_records
    path = Path(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {}
    try:
        SessionReader(path).verify()
    except SessionLogError as exc:
        out = {"error": str(exc), "file": exc.file, "record": exc.record, "offset": exc.offset}
    out["unverified"] = sum(len(p) for _, _, p in unverified_records([path]))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["growth_kib"] = after - before
    print(json.dumps(out))
    """
)


def test_a_decompression_bomb_is_refused_at_a_named_record_in_bounded_memory(tmp_path) -> None:
    path, start = bomb(tmp_path)
    assert path.stat().st_size < 64 << 10  # about 32 KB
    assert zstandard.frame_content_size(path.read_bytes()[:18]) > 1 << 30
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=ENV,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["file"] == str(path) and out["record"] == 40 and out["offset"] == start, out
    assert "record length 0 is impossible" in out["error"]
    assert out["unverified"] == 40  # the unverified reader stops there too
    # A memory-safety property, not a timing one: the old reader took over 1 GiB here.
    assert out["growth_kib"] < 300 * 1024, out


def test_a_record_longer_than_the_segment_cap_is_refused_before_it_is_buffered(tmp_path) -> None:
    session, _ = make_session(tmp_path / "src", n=40)
    raw = raw_segment(segment_files(session)[0])
    offsets = record_offsets(raw)
    # record 20 claims a 50 MiB body; the file goes on with the real bytes
    forged = bytearray(raw)
    forged[offsets[20] : offsets[20] + 4] = (50 << 20).to_bytes(4, "little")
    path = tmp_path / "seg-000001.qlog.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(bytes(forged)))
    with pytest.raises(SessionLogError) as info:
        SessionReader(path, max_segment_bytes=8 << 20).verify()
    err = info.value
    assert err.file == str(path) and err.record == 20 and err.offset == offsets[20]
    assert "past 8388608 decoded bytes" in str(err)


def test_a_segment_larger_than_its_cap_is_refused(tmp_path: Path) -> None:
    session, _ = make_session(tmp_path, n=3000, checkpoint_every=1000)
    (seg,) = segment_files(session)
    size = len(raw_segment(seg))
    SessionReader(session, max_segment_bytes=size).verify()  # exactly at the cap: fine
    with pytest.raises(SessionLogError, match="decodes to more than") as info:
        SessionReader(session, max_segment_bytes=size - 1).verify()
    assert info.value.file == str(seg) and info.value.record is not None
    # the default cap comes from the writer's rotate_bytes, recorded in session.json
    manifest = json.loads((session / "session.json").read_text())
    assert manifest["rotate_bytes"] == fmt.DEFAULT_ROTATE_BYTES
    assert SessionReader(session).max_segment_bytes == fmt.max_segment_bytes()
    assert sum(len(p) for _, _, p in unverified_records(segment_files(session))) == 3000
