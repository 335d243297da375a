"""The endpoint's local credentials: a password generated once per data directory, and the
endpoint file through which local clients find the running server (see
``quant_resources.settings``). Both files are created 0600, atomically, never world-readable."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from quant_resources.settings import ENDPOINT_FILE, PASSWORD_FILE


class EmptyPassword(ValueError):
    """An explicitly empty password: the endpoint never serves without one."""


def _write_private(path: Path, text: str) -> Path:
    """Write ``text`` to a fresh 0600 file next to ``path``; returns the temporary path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def stored_password(directory: Path) -> str:
    """The password kept in ``directory``, generated on first use. Two servers racing on a new
    directory agree: the file appears whole (linked from a finished temporary) or not at all."""
    path = directory / PASSWORD_FILE
    if not path.exists():
        tmp = _write_private(path, secrets.token_urlsafe(24) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    password = path.read_text().strip()
    if not password:
        raise EmptyPassword(f"refusing to serve without a password: {path} is empty")
    return password


def write_endpoint(directory: Path, host: str, port: int, user: str, password: str) -> Path:
    """Describe the running server for local clients (replaced atomically, 0600)."""
    path = directory / ENDPOINT_FILE
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    text = json.dumps(
        {"host": client_host, "port": port, "user": user, "password": password, "pid": os.getpid()}
    )
    os.replace(_write_private(path, text), path)
    return path


def remove_endpoint(directory: Path) -> None:
    """Remove the endpoint file if this process wrote it."""
    path = directory / ENDPOINT_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
