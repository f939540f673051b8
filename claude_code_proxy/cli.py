"""claude-code-proxy: Anthropic- and OpenAI-compatible APIs for your own Claude account,
served through the Claude Code CLI.

Start with `serve`; sign the CLI in with `login` (or `setup-token`); `doctor` checks it all.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import Any

from uvicorn import Server as _UvicornServer

from claude_code_proxy import __version__
from claude_code_proxy.accounts import cli as keys_cli
from claude_code_proxy.config.settings import is_loopback
from claude_code_proxy.ops import doctor, login_cli, usage_cli
from claude_code_proxy.web.listen import PortUnavailableError, open_listeners


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-code-proxy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to bind (default from CLAUDE_PROXY_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from CLAUDE_PROXY_PORT, 8000)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    login_cli.add_parsers(commands)
    doctor.add_parser(commands)
    usage_cli.add_parser(commands)
    keys_cli.add_parser(commands)
    return parser


def bind_problem(host: str, has_key: bool) -> str | None:
    """Why the server must not start on ``host``, or None."""
    if has_key or is_loopback(host):
        return None
    return (
        f"Refusing to listen on {host}: that address is reachable from other machines, and "
        "without an API key anyone who can reach it could use your Claude account. "
        "Set CLAUDE_PROXY_API_KEY or add a named key with `claude-code-proxy keys add NAME` "
        "(clients then send it as a Bearer token or x-api-key), or bind 127.0.0.1."
    )


def serve(host: str | None, port: int | None, reload: bool) -> int:
    import uvicorn

    from claude_code_proxy.config.settings import Settings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    problem = _shared_database_problem(settings) or bind_problem(
        settings.host, settings.api_key is not None or _named_keys_exist(settings))
    if problem:
        print(f"claude-code-proxy: {problem}", file=sys.stderr)
        return 2
    # The port first: a busy one is a clear message now, not a traceback after startup.
    try:
        sockets = open_listeners(settings.host, settings.port)
    except PortUnavailableError as exc:
        print(f"claude-code-proxy: {exc}", file=sys.stderr)
        return 1
    if reload:
        for sock in sockets:
            sock.close()  # the reloader binds its own, in its own process
        # The reloader builds the app in a fresh process from the environment.
        os.environ.update({f"CLAUDE_PROXY_{k.upper()}": str(v) for k, v in overrides.items()})
        uvicorn.run(
            "claude_code_proxy.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            reload=True,
            access_log=False,
            http="claude_code_proxy.web.server:GuardedH11Protocol",  # the default limits
        )
        return 0
    from claude_code_proxy.app import create_app
    from claude_code_proxy.web.server import raise_fd_limit, server_config, tune_allocator

    tune_allocator()
    raise_fd_limit()
    app = create_app(settings)
    config = server_config(app, settings)
    server = DrainingServer(config, on_exit=lambda: app.state.backend.begin_drain(settings.shutdown_grace))
    server.run(sockets=sockets)
    return 0


def _shared_database_problem(settings: Any) -> str | None:
    """A replica told to share a database that it cannot open must not start on its own
    (its keys' limits would no longer hold across replicas); the default file is softer."""
    if settings.database_url is None:
        return None
    from claude_code_proxy.storage.database import DatabaseError, open_database

    try:
        open_database(settings.database_url.get_secret_value())
    except DatabaseError as exc:
        return f"{exc} (CLAUDE_PROXY_DATABASE_URL)"
    return None


def _named_keys_exist(settings: Any) -> bool:
    from claude_code_proxy.accounts.store import KeyStore
    from claude_code_proxy.storage.database import DatabaseError, open_database

    url = settings.database_url.get_secret_value() if settings.database_url else ""
    try:
        db = open_database(url or settings.usage_db)
    except DatabaseError:
        return False
    return db is not None and KeyStore(db).snapshot().in_use


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

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if sockets and self.started:
            # uvicorn names the address only for sockets it bound itself: say where to connect.
            host = self.config.host
            logging.getLogger("uvicorn.error").info(
                "Listening on http://%s:%d (Press CTRL+C to quit)",
                f"[{host}]" if ":" in host else host, self.config.port,
            )

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
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["claude"]:
        # Everything after `claude` is the CLI's, options and --help included.
        return login_cli.run("claude", rest=words[1:])
    args = build_parser().parse_args(words)
    if args.command in ("login", "setup-token"):
        return login_cli.run(args.command, args)
    if args.command == "serve":
        return serve(args.host, args.port, args.reload)
    if args.command == "doctor":
        return doctor.run(args)
    if args.command == "usage":
        return usage_cli.run(args)
    if args.command == "keys":
        return keys_cli.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["bind_problem", "build_parser", "is_loopback", "main"]
