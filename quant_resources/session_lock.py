"""One writer per session directory: an exclusive ``flock`` on ``SESSION/session.lock``.

A ``SessionWriter`` holds the lock for its whole life (a new session, a resumed one, the one
``recover`` uses), and ``recover`` takes it before it touches anything, so a crashed-session
repair can never cut the segment of a writer that is still appending. ``flock`` locks belong
to an open file description: a second ``open`` of the file, in this process or another, does
not share it, and the kernel drops it when its holder dies (SIGKILL included), so a crash never
leaves a stale lock. The file stays in place after use (deleting it would let two processes
lock two different inodes); it holds the pid of the last holder, for the error message.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from quant_core.sessionlog.reader import SessionLogError

LOCK_FILE = "session.lock"
# A probe (``holder``) holds a shared lock for a few microseconds; an exclusive taker retries
# this long before it calls the session busy.
PROBE_WAIT_S = 0.5


class SessionLocked(SessionLogError):
    """The session is held by a live writer; names the session and the holder's pid."""

    def __init__(self, session_dir: Path | str, pid: int | None, action: str) -> None:
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            session_dir,
            f"is locked by {holder} ({LOCK_FILE}): the session is still being written; "
            f"{action} refused",
        )


def _pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


class SessionLock:
    """An exclusive lock on one session directory; ``release`` (idempotent) or process exit
    frees it."""

    def __init__(self, session_dir: Path, fd: int) -> None:
        self.session_dir = session_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, session_dir: Path | str, action: str) -> SessionLock:
        """Lock ``session_dir`` (LOCK_EX | LOCK_NB) or raise ``SessionLocked`` naming the
        holder; ``action`` says what was refused (e.g. ``recover``)."""
        session_dir = Path(session_dir)
        fd = os.open(session_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + PROBE_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    pid = _pid(fd)
                    os.close(fd)
                    raise SessionLocked(session_dir, pid, action) from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(session_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the description drops the flock


def holder(session_dir: Path | str) -> int | None:
    """The pid of the live writer holding ``session_dir`` (0 when it cannot be read), or None
    when nobody holds it. Read-only: probes with a shared lock held for an instant."""
    path = Path(session_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            pid = _pid(fd)
            return 0 if pid is None else pid
        return None
    finally:
        os.close(fd)  # also drops the probe's shared lock
