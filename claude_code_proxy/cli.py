"""The ``claude-code-proxy`` command: ``serve``, ``doctor`` and ``usage``."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import Any

from uvicorn import Server as _UvicornServer

from claude_code_proxy import __version__
from claude_code_proxy.config.settings import is_loopback
from claude_code_proxy.ops import doctor, usage_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-code-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to bind (default from CLAUDE_PROXY_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from CLAUDE_PROXY_PORT, 8000)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    doctor.add_parser(commands)
    usage_cli.add_parser(commands)
    return parser


def bind_problem(host: str, has_key: bool) -> str | None:
    """Why the server must not start on ``host``, or None."""
    if has_key or is_loopback(host):
        return None
    return (
        f"Refusing to listen on {host}: that address is reachable from other machines, and "
        "without an API key anyone who can reach it could use your Claude account. "
        "Set CLAUDE_PROXY_API_KEY (clients then send it as a Bearer token or x-api-key), "
        "or bind 127.0.0.1."
    )


def server_choices() -> tuple[str, str]:
    """uvicorn's (event loop, HTTP parser): uvloop and httptools, installed with the proxy
    where they exist (CPython on Linux and macOS), else the standard library's asyncio and h11.

    Measured with the benchmark (docs/performance.md): the proxy's own CPU per request is ~11 %
    lower and per streamed event ~20 % lower than with asyncio and h11; answers are the same.
    """
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def serve(host: str | None, port: int | None, reload: bool) -> int:
    import uvicorn

    from claude_code_proxy.config.settings import Settings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    problem = bind_problem(settings.host, settings.api_key is not None)
    if problem:
        print(f"claude-code-proxy: {problem}", file=sys.stderr)
        return 2
    loop, http = server_choices()
    if reload:
        # The reloader builds the app in a fresh process from the environment.
        os.environ.update({f"CLAUDE_PROXY_{k.upper()}": str(v) for k, v in overrides.items()})
        uvicorn.run(
            "claude_code_proxy.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            reload=True,
            access_log=False,
            loop=loop,
            http=http,
        )
        return 0
    from claude_code_proxy.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 3,
        loop=loop,
        http=http,
    )
    server = DrainingServer(config, on_exit=lambda: app.state.backend.begin_drain(settings.shutdown_grace))
    server.run()
    return 0


class DrainingServer(_UvicornServer):
    """uvicorn, plus: on SIGTERM/SIGINT the backend starts draining at once.

    uvicorn stops accepting connections and waits for in-flight requests; the backend
    gives them ``shutdown_grace`` seconds, then ends the rest with an error event; the
    app's lifespan shutdown kills any CLI still running.
    """

    def __init__(self, config: Any, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._drain_started = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._drain_started:
            self._drain_started = True
            with suppress(RuntimeError):
                # A signal handler must not touch the loop's state directly.
                asyncio.get_event_loop().call_soon_threadsafe(self._on_exit)
        super().handle_exit(sig, frame)
        # uvicorn re-raises a captured SIGTERM after its graceful shutdown, which makes the
        # process die "killed by SIGTERM"; a completed drain is a clean exit (status 0).
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list) and sig == signal.SIGTERM:
            captured[:] = [s for s in captured if s != signal.SIGTERM]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port, args.reload)
    if args.command == "doctor":
        return doctor.run(args)
    if args.command == "usage":
        return usage_cli.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["bind_problem", "build_parser", "is_loopback", "main", "server_choices"]
