"""A named lock held in ClickHouse itself, so writers on any host serialise on the server they
write to.

Holding the lock *is* the existence of a table ``_lock_<hash>``: ``CREATE TABLE`` (without
``IF NOT EXISTS``) is atomic on one server and fails with ``TABLE_ALREADY_EXISTS`` for every
creator but one. The holder (run id, pid, host), a unique token, the acquisition time and the
lease are in the table's comment, written by the same statement, so a lock is never seen
without its holder. Releasing is ``DROP``.

A lock whose lease ran out, or whose holder was a process on this host that is gone, may be
broken: it is renamed to a unique name (``RENAME`` of one name succeeds once, so one breaker
wins), then its comment is read again. If the renamed table is not the expired lock the
breaker looked at (it was released and taken afresh in between), it is renamed back; should
a third writer have taken the name meanwhile, the renamed lock is dropped, and its holder
finds that out at ``verify`` before it deletes anything. Leases are long (minutes) against
publications of seconds, so breaking is for crashed holders, not slow ones.

Single server only: on a cluster, a table created on one replica is not a lock on another.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from clickhouse_connect.driver.exceptions import ClickHouseError

from quant_resources.warehouse import WarehouseError, WarehouseResource, identifier

LOCK_PREFIX = "_lock_"
_SAFE = re.compile(r"[^A-Za-z0-9._:-]")
_FIELD = re.compile(r"(\w+)=([^;]*)")


class LockTimeoutError(WarehouseError):
    """Another writer held the lock for longer than this one would wait; names the holder."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, read back from the lock table's comment."""

    holder: str
    pid: int
    host: str
    token: str
    acquired_ms: int
    lease_until_ms: int

    @classmethod
    def parse(cls, comment: str) -> Holder | None:
        fields = dict(_FIELD.findall(comment))
        try:
            return cls(
                holder=fields["holder"],
                pid=int(fields["pid"]),
                host=fields["host"],
                token=fields["token"],
                acquired_ms=int(fields["acquired"]),
                lease_until_ms=int(fields["lease_until"]),
            )
        except (KeyError, ValueError):
            return None

    def comment(self) -> str:
        return (
            f"holder={self.holder};pid={self.pid};host={self.host};token={self.token};"
            f"acquired={self.acquired_ms};lease_until={self.lease_until_ms}"
        )

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.acquired_ms / 1000))
        return f"{self.holder} (pid {self.pid} on {self.host}, since {since})"

    def is_dead(self, now_ms: int) -> bool:
        """Lease over, or a process of this host that no longer exists."""
        if now_ms > self.lease_until_ms:
            return True
        if self.host != _host():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _host() -> str:
    return _SAFE.sub("_", socket.gethostname())[:64] or "unknown"


def lock_name(*parts: str) -> str:
    """``_lock_<first part>_<hash of all parts>``: readable in ``system.tables``, and a valid
    identifier whatever the parts contain."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
    head = re.sub(r"[^A-Za-z0-9_]", "_", parts[0])[:40]
    return identifier(f"{LOCK_PREFIX}{head}_{digest}")


class WarehouseLock:
    """One lock, taken with ``hold()``; see the module doc for why it is correct."""

    def __init__(
        self,
        warehouse: WarehouseResource,
        name: str,
        *,
        holder: str,
        wait_seconds: float,
        lease_seconds: float,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.name = identifier(name)
        self.holder = _SAFE.sub("_", holder)[:120] or "unknown"
        self.wait_seconds = wait_seconds
        self.lease_seconds = lease_seconds
        self.log = log or logging.getLogger(__name__).warning
        self.token: str | None = None

    def _read(self, name: str) -> Holder | bool | None:
        """The holder of table ``name``; None if it has no readable holder; False if absent."""
        rows = self.warehouse.query_rows(
            "SELECT comment FROM system.tables WHERE database = currentDatabase() "
            "AND name = {n:String}",
            {"n": name},
        )
        return Holder.parse(rows[0][0]) if rows else False

    def _try_create(self) -> bool:
        now = int(time.time() * 1000)
        me = Holder(
            holder=self.holder,
            pid=os.getpid(),
            host=_host(),
            token=uuid.uuid4().hex,
            acquired_ms=now,
            lease_until_ms=now + int(self.lease_seconds * 1000),
        )
        try:
            # The comment holds only [A-Za-z0-9._:=;-] (see _SAFE): nothing to escape.
            self.warehouse.client.command(
                f"CREATE TABLE {self.name} (held UInt8) ENGINE = Memory COMMENT '{me.comment()}'"
            )
        except ClickHouseError as exc:
            if "TABLE_ALREADY_EXISTS" in str(exc) or "Code: 57." in str(exc):
                return False
            raise
        self.token = me.token
        return True

    def _break(self, seen: Holder) -> None:
        """Break the expired lock ``seen``; a no-op if someone else was faster."""
        broken = identifier(f"{self.name}_broken_{uuid.uuid4().hex[:12]}")
        try:
            self.warehouse.client.command(f"RENAME TABLE {self.name} TO {broken}")
        except ClickHouseError:
            return  # released, or broken by another writer first
        got = self._read(broken)
        if isinstance(got, Holder) and got.token != seen.token:
            # Not the lock we judged expired: a fresh one taken in between. Give it back.
            with contextlib.suppress(ClickHouseError):
                self.warehouse.client.command(f"RENAME TABLE {broken} TO {self.name}")
                return
        self.warehouse.client.command(f"DROP TABLE IF EXISTS {broken} SYNC")
        if isinstance(got, Holder) and got.token == seen.token:
            self.log(f"lock {self.name}: broke the lock of {seen.describe()} (holder gone)")

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        pause = 0.01
        while not self._try_create():
            seen = self._read(self.name)
            if seen is False:
                continue  # released between our CREATE and the read
            now_ms = int(time.time() * 1000)
            if isinstance(seen, Holder) and seen.is_dead(now_ms):
                self._break(seen)
                continue
            if time.monotonic() >= deadline:
                who = seen.describe() if isinstance(seen, Holder) else "an unknown holder"
                raise LockTimeoutError(
                    f"{self.name} is held by {who}; waited {self.wait_seconds:g}s "
                    "(another run is publishing the same slice: retry when it has finished)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def verify(self) -> None:
        """Raise unless this process still holds the lock (call before deleting anything)."""
        seen = self._read(self.name)
        if not isinstance(seen, Holder) or seen.token != self.token:
            raise WarehouseError(
                f"lock {self.name} was lost (lease of {self.lease_seconds:g}s expired and it "
                "was broken): nothing deleted"
            )

    def release(self) -> None:
        if self.token is None:
            return
        seen = self._read(self.name)
        if isinstance(seen, Holder) and seen.token == self.token:
            self.warehouse.client.command(f"DROP TABLE IF EXISTS {self.name} SYNC")
        self.token = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[WarehouseLock]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()
