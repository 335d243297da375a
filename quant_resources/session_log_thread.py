"""The session log written from a thread of its own, so the live event loop never encodes,
hashes, writes or fsyncs records.

``append`` and ``append_many`` only hand the record over (the same arguments as
``SessionWriter``'s, in the same order: the log's order is the order of the calls) and count it
in ``ticket``. The thread applies them to the ``SessionWriter`` in order and fsyncs after each
drain; records handed over while an fsync runs are covered by the next one, so under load one
fsync covers many bursts (group commit). ``durable_ticket`` is how many are fsynced; after each
fsync ``on_durable`` runs on the loop.

The write-ahead gate of the live pipeline: a kernel output produced from records up to ticket
T reaches the sinks only once ``durable_ticket >= T``. A crash at any moment leaves nothing in
a sink whose records the log lacks, and the event loop goes on reading while the disk works.

A failure of the writer (a full disk) is kept and raised by the next ``append``, ``durable`` or
``close``: nothing is released past a record that could not be written.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Sequence
from typing import Any

from quant_resources.session_writer import ClosedSession, SessionWriter


class SessionLogThread:
    """A ``SessionWriter`` (built with its own fsync triggers out of the way: this class
    decides when to fsync) fed from the event loop's thread."""

    def __init__(
        self,
        writer: SessionWriter,
        loop: asyncio.AbstractEventLoop,
        on_durable: Callable[[], None] | None = None,
    ) -> None:
        self.writer = writer
        self.loop = loop
        self.on_durable = on_durable
        self.ticket = 0  # records handed over (an append_many counts once)
        self.durable_ticket = 0  # of those, written and fsynced (set by the thread)
        self.records = 0  # records handed over (an append_many counts each)
        self.durable_records = 0  # of those, written and fsynced (set by the thread)
        self._ops: collections.deque = collections.deque()
        self._wake = threading.Condition()
        self._answer_due = False  # an ``_answer`` is scheduled on the loop
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._error: BaseException | None = None
        self._stopping = False
        self._idle = False  # the thread waits for work: an append must wake it
        self._thread = threading.Thread(target=self._run, name="session-log", daemon=True)
        self._thread.start()

    # -- the event loop's side ------------------------------------------------------------------
    def append(
        self, kind: Any, conn_id: int, recv_ns: int, payload: bytes, meta: dict | None = None
    ) -> int:
        """Hand one record over; -> its ticket."""
        self._put((False, kind, (conn_id, recv_ns, payload, meta)), 1)
        return self.ticket

    def append_many(self, kind: Any, records: Sequence[tuple]) -> None:
        """Hand (conn_id, recv_ns, payload) records without meta over, in order."""
        self._put((True, kind, records), len(records))

    @property
    def backlog(self) -> int:
        """Records handed over and not yet fsynced."""
        return self.records - self.durable_records

    def _put(self, op: tuple, n: int) -> None:
        if self._error is not None:
            raise RuntimeError(f"the session log cannot be written: {self._error}")
        self._ops.append(op)
        self.ticket += 1
        self.records += n
        with self._wake:  # read under the lock: a thread about to wait sees the op or is woken
            if self._idle:
                self._wake.notify()

    async def durable(self, ticket: int | None = None) -> None:
        """Return once every record up to ``ticket`` (default: all handed over) is fsynced."""
        ticket = self.ticket if ticket is None else ticket
        if self.durable_ticket >= ticket:
            return
        if self._error is not None:
            raise RuntimeError(f"the session log cannot be written: {self._error}")
        future = self.loop.create_future()
        self._waiters.append((ticket, future))
        await future

    def _answer(self) -> None:
        """(On the loop, after an fsync) wake the waiters whose records are durable (all, with
        the error, on a failure), then ``on_durable``."""
        self._answer_due = False
        done = self.durable_ticket
        waiting = []
        for ticket, future in self._waiters:
            if future.done():
                continue
            if self._error is not None:
                future.set_exception(
                    RuntimeError(f"the session log cannot be written: {self._error}")
                )
            elif ticket <= done:
                future.set_result(None)
            else:
                waiting.append((ticket, future))
        self._waiters = waiting
        if self.on_durable is not None and self._error is None:
            self.on_durable()

    def close(self, stop_exchange_ms: int | None, *, clean: bool = True) -> ClosedSession:
        """Write what is left, stop the thread, then close the log (footer, compression)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"the session log cannot be written: {self._error}")
        return self.writer.close(stop_exchange_ms, clean=clean)

    @property
    def digest(self) -> str:
        return self.writer.digest

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        """Apply what was handed over, in order; fsync after each drain (everything handed over
        meanwhile is covered by the one fsync: under load, many bursts per fsync)."""
        writer, ops, wake = self.writer, self._ops, self._wake
        done = records = 0  # tickets and records applied
        try:
            while True:
                with wake:
                    while not ops and not self._stopping:
                        self._idle = True
                        wake.wait()
                    self._idle = False
                    stopping = self._stopping
                # Only what was handed over before this drain: the loop keeps handing records
                # over, and a drain that chased them would never fsync under sustained load
                # (nothing would reach a sink, and a stop would wait for the whole backlog).
                for _ in range(len(ops)):
                    many, kind, args = ops.popleft()
                    if many:
                        writer.append_many(kind, args)
                        records += len(args)
                    else:
                        writer.append(kind, *args)
                        records += 1
                    done += 1
                if done > self.durable_ticket:
                    writer.sync()
                    self.durable_records = records
                    self.durable_ticket = done
                    if not self._answer_due:
                        self._answer_due = True
                        self.loop.call_soon_threadsafe(self._answer)
                if stopping and not ops:
                    return
        except BaseException as exc:  # the loop learns of it at its next call
            self._error = exc
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self._answer)
