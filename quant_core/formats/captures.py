"""Line formats of third-party raw captures -> (receive time in ns, raw frame bytes).

* cryptofeed raw-data logs: a header line ``<url> <-> <epoch_s>``, then ``<epoch_s>: <frame>``;
  its HTTP log (``<exchange>.0``): ``<url> -> <epoch_s>: <body>`` per REST answer.
* hftbacktest collector files: ``<epoch_ns> <frame>`` per line.

Frames are returned byte-for-byte as captured; decoding them is the normaliser's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal


class CaptureError(ValueError):
    """A line that does not fit the capture format; names the line number and its start."""


def _seconds_to_ns(text: bytes, lineno: int) -> int:
    try:
        return int(Decimal(text.decode()) * 1_000_000_000)
    except Exception as exc:
        raise CaptureError(f"line {lineno}: receive time {text[:30]!r} is not a number") from exc


def read_cryptofeed(lines: Iterable[bytes]) -> tuple[str, Iterator[tuple[int, bytes]]]:
    """Return the stream URL of the header and an iterator over (recv_ns, frame)."""
    it = iter(lines)
    header = next(it, b"").rstrip(b"\r\n")
    url, sep, _ = header.partition(b" <-> ")
    if not sep:
        raise CaptureError(
            f"line 1: {header[:60]!r} is not a cryptofeed header '<url> <-> <epoch>'"
        )

    def frames() -> Iterator[tuple[int, bytes]]:
        for lineno, line in enumerate(it, start=2):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            if b" <-> " in line and not line.startswith(b"{"):
                continue  # a reconnect writes a fresh header line
            stamp, sep, frame = line.partition(b": ")
            if not sep:
                raise CaptureError(f"line {lineno}: {line[:60]!r} lacks '<epoch>: <frame>'")
            yield _seconds_to_ns(stamp, lineno), frame

    return url.decode(), frames()


def read_hftbacktest(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        stamp, sep, frame = line.partition(b" ")
        if not sep or not stamp.isdigit():
            raise CaptureError(f"line {lineno}: {line[:60]!r} is not '<epoch_ns> <frame>'")
        yield int(stamp), frame


def is_cryptofeed_http(first_line: bytes) -> bool:
    """Whether a cryptofeed log is its HTTP log (``<url> -> <epoch_s>: <body>`` lines)."""
    return b" -> " in first_line.split(b": ", 1)[0] and b" <-> " not in first_line


def read_cryptofeed_http(lines: Iterable[bytes]) -> Iterator[tuple[int, str, bytes]]:
    """A cryptofeed HTTP log -> (recv_ns, request URL, answer body) per line."""
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        url, sep, rest = line.partition(b" -> ")
        stamp, sep2, body = rest.partition(b": ")
        if not sep or not sep2:
            raise CaptureError(f"line {lineno}: {line[:60]!r} is not '<url> -> <epoch>: <body>'")
        yield _seconds_to_ns(stamp, lineno), url.decode(), body
