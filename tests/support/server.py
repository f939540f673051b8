"""A real uvicorn serving the app on 127.0.0.1, in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from claude_code_proxy.app import create_app
from claude_code_proxy.backend.base import Backend as ClaudeBackend
from claude_code_proxy.config.settings import Settings
from claude_code_proxy.web.server import server_config
from tests.support.procs import wait_until


class RunningServer:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread, app: object) -> None:
        self.server = server
        self.thread = thread
        self.app = app
        sockets = server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"


@contextmanager
def serve(settings: Settings | None = None, backend: ClaudeBackend | None = None) -> Iterator[RunningServer]:
    settings = settings or Settings(_env_file=None)  # type: ignore[call-arg]
    app = create_app(settings, backend)
    # The server ``serve`` runs (its connection limits included), on a free loopback port.
    config = server_config(app, settings, host="127.0.0.1", port=0, log_level="warning",
                           lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a hang guard: a busy machine can be slow to start a thread
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield RunningServer(server, thread, app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def ledger_row(server: RunningServer, request_id: str) -> dict[str, Any]:
    """The request's row in the server's usage ledger, once it is written."""
    found: dict[str, Any] = {}

    def recorded() -> bool:
        rows = httpx.get(f"{server.url}/usage", params={"recent": 50}, timeout=10).json()["recent"]
        found.update(next((row for row in rows if row["request_id"] == request_id), {}))
        return bool(found)

    assert wait_until(recorded), f"no ledger row for {request_id}"
    return found
