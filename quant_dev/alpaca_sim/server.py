"""Run the simulator under uvicorn on a socket bound before start-up, so that ``--port 0``
can print the port the OS chose (tests read it from the first line of output)."""

from __future__ import annotations

import socket
import sys

import uvicorn

from quant_dev.alpaca_sim.app import SimConfig, create_app


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{bound}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), log_level="warning", access_log=False, lifespan="off")
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
