"""Minimal HTTP/1.1 and WebSocket (RFC 6455) framing for the simulator.

Hand-rolled rather than a framework because the faults need the raw transport: close a socket
without a close frame, stop reading (and so stop answering pings), see the send buffer fill up,
and write thousands of pre-built frames in one syscall.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 64 * 1024  # a combined-stream URL with 1024 streams is ~30 KB
MAX_BODY = 1024 * 1024
MAX_WS_MESSAGE = 64 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HttpError(Exception):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"

    @property
    def is_websocket(self) -> bool:
        return (
            self.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in self.headers.get("connection", "").lower()
        )


def parse_request(buf: bytearray) -> tuple[Request | None, int]:
    """The first complete request in buf and the bytes it used; (None, 0) when incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise HttpError(431, "request head too large")
        return None, 0
    try:
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise HttpError(505, "HTTP/1.x only")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"malformed header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad content-length") from None
    if length > MAX_BODY or length < 0:
        raise HttpError(413, "body too large")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError(411, "chunked bodies are not supported; send content-length")
    total = end + 4 + length
    if len(buf) < total:
        return None, 0
    parts = urlsplit(target)
    req = Request(method, target, headers, bytes(buf[end + 4 : total]), parts.path)
    req.query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return req, total


def http_response(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json;charset=UTF-8",
    keep_alive: bool = True,
) -> bytes:
    reason = HTTPStatus(status).phrase
    head = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: " + ("keep-alive" if keep_alive else "close"),
    ]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def handshake_response(req: Request) -> bytes:
    key = req.headers.get("sec-websocket-key", "")
    try:
        key_ok = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        key_ok = False
    if req.headers.get("sec-websocket-version") != "13" or not key_ok:
        raise HttpError(400, "bad websocket handshake (version 13 and a key are required)")
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    # No permessage-deflate: Binance's JSON streams are not compressed either.
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()


# The headers of text frames of up to 4 KiB, made once: market-data frames take them by length
# (the simulator publishes tens of thousands a second).
TEXT_HEADS = tuple(
    bytes((0x80 | OP_TEXT, n)) if n < 126 else struct.pack("!BBH", 0x80 | OP_TEXT, 126, n)
    for n in range(4096)
)


def frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One unmasked, unfragmented server frame."""
    n = len(payload)
    if n < 4096 and opcode == OP_TEXT:
        return TEXT_HEADS[n] + payload
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def server_payload(data: bytes) -> bytes:
    """The payload of one frame made by ``frame``."""
    n = data[1] & 0x7F
    return data[2 + {126: 2, 127: 8}.get(n, 0) :]


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(struct.pack("!H", code) + reason.encode()[:120], OP_CLOSE)


class FrameError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code


class FrameReader:
    """Incremental parser of masked client frames; yields (opcode, payload) of whole messages
    (continuations joined) and of control frames."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._parts: list[bytes] = []
        self._op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while True:
            got = self._one()
            if got is None:
                return out
            out.append(got)

    def _one(self) -> tuple[int, bytes] | None:
        while True:
            buf = self.buf
            if len(buf) < 2:
                return None
            b0, b1 = buf[0], buf[1]
            fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if b0 & 0x70:
                raise FrameError(1002, "reserved bits set (no extension was negotiated)")
            if not b1 & 0x80:
                raise FrameError(1002, "client frames must be masked")
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return None
                n, pos = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return None
                n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
            if n > MAX_WS_MESSAGE:
                raise FrameError(1009, "message too big")
            if len(buf) < pos + 4 + n:
                return None
            mask = bytes(buf[pos : pos + 4])
            raw = bytes(buf[pos + 4 : pos + 4 + n])
            del self.buf[: pos + 4 + n]
            key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            payload = (int.from_bytes(raw, "big") ^ key).to_bytes(n, "big") if n else b""
            if op >= 8:
                if not fin or n > 125:
                    raise FrameError(1002, "bad control frame")
                return op, payload
            if op == OP_CONT:
                if not self._parts:
                    raise FrameError(1002, "continuation without a message")
            elif op in (OP_TEXT, OP_BINARY):
                if self._parts:
                    raise FrameError(1002, "new message inside a fragmented one")
                self._op = op
            else:
                raise FrameError(1002, f"unknown opcode {op}")
            self._parts.append(payload)
            if sum(map(len, self._parts)) > MAX_WS_MESSAGE:
                raise FrameError(1009, "message too big")
            if fin:
                message, self._parts = b"".join(self._parts), []
                return self._op, message
