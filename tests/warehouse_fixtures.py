"""A ``quant warehouse serve`` subprocess for tests, and raw HTTP helpers to talk to it."""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from quant_dev.processes import Child, free_port
from quant_resources.settings import PASSWORD_FILE

QUANT = Path(sys.executable).with_name("quant")


@dataclass
class WarehouseServer:
    path: Path
    user: str
    password: str | None  # None: the one the server generates and keeps in ``path``
    port: int = field(default_factory=free_port)
    password_via_env: bool = False
    # More ``quant warehouse serve`` options, e.g. ("--max-execution-time", "2")
    args: tuple[str, ...] | list[str] = ()
    env_extra: dict[str, str] = field(default_factory=dict)
    child: Child | None = None

    @property
    def proc(self) -> subprocess.Popen:
        assert self.child is not None, "the server was not started"
        return self.child.process

    @property
    def log_path(self) -> Path:
        """The server's output, next to (not inside) its directory."""
        return self.path.parent / f"{self.path.name}-{self.port}.log"

    def command(self) -> list[str]:
        cmd = [str(QUANT), "warehouse", "serve", "--path", str(self.path), "--port", str(self.port)]
        cmd += ["--user", self.user, "--log-level", "warning", *self.args]
        if self.password_via_env or self.password is None:
            return cmd
        return [*cmd, "--password", self.password]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("QUANT_WAREHOUSE_PASSWORD", None)
        env.pop("QUANT_WAREHOUSE_CORS_ORIGINS", None)
        if self.password_via_env:
            env["QUANT_WAREHOUSE_PASSWORD"] = self.password
        return {**env, **self.env_extra}

    def start(self, timeout: float = 60.0) -> WarehouseServer:
        self.child = Child(
            "quant warehouse serve",
            self.command(),
            lambda: self.request("GET", "/ping")[0] == 200,
            environ=self.env(),
            log=self.log_path,
            start_timeout=timeout,
        )
        if self.password is None:
            self.password = (self.path / PASSWORD_FILE).read_text().strip()
        return self

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.child is not None
        return self.child.stop(timeout)

    def client(self, **kwargs):
        import clickhouse_connect

        kwargs.setdefault("username", self.user)
        kwargs.setdefault("password", self.password)
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.port, **kwargs)

    def basic_auth(self, user: str | None = None, password: str | None = None) -> dict[str, str]:
        token = f"{user or self.user}:{self.password if password is None else password}"
        return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}

    def request(
        self,
        method: str,
        path: str = "/",
        params: dict[str, str] | None = None,
        body=None,
        headers: dict[str, str] | None = None,
        encode_chunked: bool = False,
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request; returns status, lower-cased headers and the undecoded body."""
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(
                method, url, body=body, headers=headers or {}, encode_chunked=encode_chunked
            )
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()
