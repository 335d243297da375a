"""``quant dev`` (``make dev``): the Dagster UI on the embedded defaults, with a clean terminal.

Starts the local warehouse endpoint on ``QUANT_HOME/warehouse`` (the data ``make demo`` wrote)
unless ``CLICKHOUSE_URL`` names another warehouse, then ``dagster dev`` (webserver, daemon, code
server) in a process group of its own, so that a stop reaches every child, and the data service
(``quant serve api`` on ``--api-port``, 8000, or a free port when that is taken; its token in
``QUANT_HOME/api-token``) reading the private Redis of ``QUANT_HOME/redis`` (the latest values
``make demo`` left; ``REDIS_URL`` names another) when redis-server is there. Dagster's own output
goes to ``QUANT_HOME/logs/dagster-dev.log`` (``--verbose`` shows it here). The terminal shows
where the UI and the warehouse are and how to stop; Ctrl-C or SIGTERM stops everything within
``STOP_SECONDS`` and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from quant_resources import settings

if TYPE_CHECKING:
    from quant_dev.processes import Child

ROOT = Path(__file__).resolve().parents[1]
STOP_SECONDS = 10.0
# Library warnings the UI user can do nothing about: Dagster's own notice that `dagster dev`
# has a successor, and the beta marker of the backfill policies this project chose knowingly.
QUIET_WARNINGS = "ignore::FutureWarning"
DEFAULTS = {
    "QUANT_EQUITY_SOURCE": "synthetic",
    "QUANT_EQUITY_SYMBOLS": "SPY,QQQ,AAPL",
    "QUANT_OPTION_UNDERLYINGS": "SPY",
}


def dev(
    host: str = typer.Option("127.0.0.1", envvar="DAGSTER_HOST", help="Interface of the UI."),
    port: int = typer.Option(3000, envvar="DAGSTER_PORT", help="Port of the UI."),
    verbose: bool = typer.Option(False, help="Show Dagster's own output here too."),
    api_port: int = typer.Option(8000, envvar="QUANT_API_PORT", help="Port of the data API."),
) -> None:
    """Run the Dagster UI on the embedded defaults (the data `make demo` wrote)."""
    home = settings.quant_home()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QUANT_HOME": str(home)}
    for name, value in DEFAULTS.items():
        env[name] = settings.setting(name, value)
    env["DAGSTER_HOME"] = str(dagster_home(home))
    env["PYTHONWARNINGS"] = QUIET_WARNINGS
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from quant_dev.serving import local_redis

    with warehouse(home, env) as (url, note), local_redis(home) as (redis_url, redis_note):
        env["CLICKHOUSE_URL"] = url
        ui = f"http://{host}:{port}"
        log_file = logs / "dagster-dev.log"
        typer.echo(f"warehouse   {settings.redact_url(url)}")
        if note:
            typer.echo(f"            {note}")
        if redis_url:  # the live job and the data API share it
            env["REDIS_URL"] = redis_url
        typer.echo(f"redis       {settings.redact_url(redis_url or '')} {redis_note}".rstrip())
        typer.echo(f"Dagster     starting (its log: {log_file})")
        with (
            dagster_dev(env, host, port, log_file, verbose) as process,
            data_api(home, env, api_port),
        ):
            if wait_ready(ui, process, stop):
                typer.echo(f"Dagster UI  {ui}")
            typer.echo(
                "stop        Ctrl-C (or SIGTERM): stops the UI, daemon, code server, data API, "
                "Redis and warehouse"
            )
            while not stop.is_set() and process.running():
                stop.wait(0.5)
            code = process.process.poll()
        if code not in (None, 0) and not stop.is_set():
            typer.echo(f"dagster dev exited with status {code}; see {log_file}", err=True)
            raise typer.Exit(1)
    typer.echo("stopped")


# ui2: Dagster's default launcher, which also terminates terminal `quant live` runs.
LAUNCHER = "run_launcher:\n  module: quant_assets.live_runs\n  class: QuantRunLauncher\n"


def dagster_home(home: Path) -> Path:
    """The embedded instance: SQLite storage under QUANT_HOME/dagster, telemetry off, and
    :class:`~quant_assets.live_runs.QuantRunLauncher` as its run launcher. An instance file
    made before that launcher was named (no ``run_launcher:``) gets it added, once, keeping
    every other setting; one that names a launcher of its own is left as it is."""
    folder = home / "dagster"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "# Embedded default: SQLite storage in this folder.\ntelemetry:\n  enabled: false\n"
            + LAUNCHER  # ui2: Terminate works on terminal quant live runs
        )
    else:
        add_run_launcher(config)
    return folder


def add_run_launcher(config: Path) -> bool:
    """Add ``LAUNCHER`` to the instance file ``config`` when it names no run launcher (Dagster's
    default then answers Terminate of a terminal ``quant live`` run with "Unable to terminate
    run"); says so on standard error. Returns whether it was added."""
    text = config.read_text()
    # A top-level key starts its line (Dagster's instance file is a block mapping).
    if re.search(r"(?m)^run_launcher\s*:", text):
        return False
    separator = "" if not text or text.endswith("\n") else "\n"
    # Appended, not rewritten: the user's comments and layout stay. Replaced whole, so two
    # processes starting at once leave the same file.
    staged = config.with_name(f".{config.name}.{os.getpid()}")
    staged.write_text(
        f"{text}{separator}# Added by quant: Terminate in the UI stops a terminal quant live run.\n"
        + LAUNCHER
    )
    os.replace(staged, config)
    typer.echo(
        f"note: {config} named no run_launcher; added quant_assets.live_runs.QuantRunLauncher "
        "(Dagster's default launcher, which also terminates terminal quant live runs)",
        err=True,
    )
    return True


@contextlib.contextmanager
def warehouse(home: Path, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """``CLICKHOUSE_URL`` when set, else the local endpoint on QUANT_HOME/warehouse (started
    here, stopped on exit). Yields the URL and where its password is kept."""
    configured = settings.setting("CLICKHOUSE_URL")
    if configured:
        yield configured, "(from CLICKHOUSE_URL)"
        return
    from quant_dev.processes import warehouse_endpoint

    directory = home / "warehouse"
    with warehouse_endpoint(directory) as url:
        yield url, f"data and password (mode 0600) in {directory}; clients find it there"


@contextlib.contextmanager
def data_api(home: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """The data service on ``port`` (a free one when it is taken); prints where and how."""
    from quant_dev.serving import LATEST_PATH, ApiServer, curl_line, port_free

    api = ApiServer(home, port if port_free(port) else None, env).start()
    try:
        base = api.wait_ready()
        typer.echo(f"data API    {base}  (token in {home / 'api-token'})")
        typer.echo(f"            {curl_line(home, base, LATEST_PATH)}")
        yield base
    finally:
        api.stop()


@contextlib.contextmanager
def dagster_dev(
    env: dict[str, str], host: str, port: int, log_file: Path, verbose: bool
) -> Iterator[Child]:
    """``dagster dev`` in a process group of its own: the stop reaches every child. SIGTERM to
    the group (dagster dev shuts its children down), SIGKILL to whatever is left after
    ``STOP_SECONDS`` (code servers can outlive their parent otherwise)."""
    from quant_dev.processes import Child

    command = [
        str(Path(sys.executable).with_name("dagster")),
        "dev",
        "-w",
        str(ROOT / "workspace.yaml"),
        "-h",
        host,
        "-p",
        str(port),
    ]
    child = Child(
        "dagster dev",
        command,
        None,
        environ=env,
        log=log_file,
        echo=verbose,
        # Run from the instance folder: the repository's dagster.yaml (the deployment's, on
        # PostgreSQL) is then not next to it, and Dagster has nothing to warn about.
        cwd=Path(env["DAGSTER_HOME"]),
        group=True,
    )
    try:
        yield child
    finally:
        child.stop(STOP_SECONDS, settle=True)


def wait_ready(ui: str, process: Child, stop: threading.Event) -> bool:
    """Until the webserver answers (True), dagster dev exits or a stop is asked (False)."""
    while not stop.is_set() and process.running():
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{ui}/server_info", timeout=2) as answer,
        ):
            if answer.status == 200:
                return True
        stop.wait(0.5)
    return False
