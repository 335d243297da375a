"""Which browsers and names may reach the endpoint: the Host header must name the bound
address (so a web page cannot reach it through DNS rebinding) and CORS answers only origins
named in configuration, with the exact origin, never ``*``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_CORS_METHODS = "GET, POST, OPTIONS"
_CORS_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, Accept-Encoding, X-ClickHouse-User, "
    "X-ClickHouse-Key, X-ClickHouse-Database, X-ClickHouse-Format, X-ClickHouse-Quota"
)
_EXPOSED_HEADERS = (
    "X-ClickHouse-Query-Id, X-ClickHouse-Format, X-ClickHouse-Summary, X-ClickHouse-Timezone, "
    "X-ClickHouse-Exception-Code, X-ClickHouse-Exception-Tag, X-ClickHouse-Server-Display-Name"
)


@dataclass(frozen=True)
class Access:
    hosts: frozenset[str]  # lower-case ``name:port`` values the Host header may carry
    origins: frozenset[str]  # exact origins CORS answers

    @classmethod
    def of(
        cls, host: str, port: int, allowed_hosts: Iterable[str] = (), origins: Iterable[str] = ()
    ) -> Access:
        """The loopback names and the bound address, plus ``allowed_hosts`` (``name`` or
        ``name:port``), each with this server's port."""
        bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
        names = {*_LOOPBACK_NAMES, bound}
        hosts = set()
        for name in (*names, *allowed_hosts):
            name = name.strip().lower()
            if not name:
                continue
            has_port = name.rsplit(":", 1)[-1].isdigit() and not name.endswith("]")
            hosts.add(name if has_port else f"{name}:{port}")
        return cls(frozenset(hosts), frozenset(o.strip().rstrip("/") for o in origins if o.strip()))


def _plain(status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple:
    body = text.encode()
    head = [
        (b"content-type", b"text/plain; charset=UTF-8"),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    return {"type": "http.response.start", "status": status, "headers": head}, {
        "type": "http.response.body",
        "body": body,
    }


class AccessMiddleware:
    """ASGI middleware in front of the whole app (so streamed responses pass untouched)."""

    def __init__(self, app, access: Access, version: str):
        self.app = app
        self.access = access
        self.version = version

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").strip().lower()
        if host not in self.access.hosts:
            await self._send(
                send,
                *_plain(
                    403,
                    f"Code: 497. DB::Exception: Host header {host!r} does not name this server "
                    f"(allowed: {', '.join(sorted(self.access.hosts))}; add names with "
                    f"--allowed-host). (ACCESS_DENIED) (version {self.version})\n",
                    [(b"x-clickhouse-exception-code", b"497")],
                ),
            )
            return
        origin = headers.get("origin")
        allowed = origin if origin is not None and origin in self.access.origins else None
        if scope["method"] == "OPTIONS":
            await self._preflight(send, allowed, origin)
            return
        if allowed is None:
            await self.app(scope, receive, send)
            return
        cors = [
            (b"access-control-allow-origin", allowed.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", _EXPOSED_HEADERS.encode()),
            (b"vary", b"Origin"),
        ]

        async def send_with_cors(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, send, allowed: str | None, origin: str | None) -> None:
        if allowed is None:
            await self._send(
                send,
                *_plain(403, f"CORS: origin {origin!r} is not allowed (--cors-origin)\n"),
            )
            return
        await self._send(
            send,
            *_plain(
                204,
                "",
                [
                    (b"access-control-allow-origin", allowed.encode("latin-1")),
                    (b"access-control-allow-credentials", b"true"),
                    (b"access-control-allow-methods", _CORS_METHODS.encode()),
                    (b"access-control-allow-headers", _CORS_HEADERS.encode()),
                    (b"access-control-max-age", b"600"),
                    (b"vary", b"Origin"),
                ],
            ),
        )

    @staticmethod
    async def _send(send, start: dict, body: dict) -> None:
        await send(start)
        await send(body)
