"""``claude-code-proxy serve`` (and later subcommands)."""

from __future__ import annotations

import argparse
import os
import sys

from claude_code_proxy import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claude-code-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to bind (default from CLAUDE_PROXY_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from CLAUDE_PROXY_PORT, 8000)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    return parser


def serve(host: str | None, port: int | None, reload: bool) -> int:
    import uvicorn

    from claude_code_proxy.config.settings import Settings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
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
        )
        return 0
    from claude_code_proxy.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, access_log=False, log_config=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port, args.reload)
    return 2


if __name__ == "__main__":
    sys.exit(main())
