"""``login``, ``setup-token`` and ``claude``: the proxy's own Claude Code CLI, run by hand.

The proxy runs the CLI bundled in the claude-agent-sdk wheel (or ``CLAUDE_PROXY_CLI_PATH``),
which is deep inside the virtual environment and not on ``PATH``.  These commands run that
same CLI with the same configuration directory (``CLAUDE_CONFIG_DIR``, else ``~/.claude``), so
a login made here is the login the proxy uses:

- ``login``: the CLI's own sign-in (its ``auth login``), for a Claude subscription by
  default, ``--console`` for an API account;
- ``setup-token``: a long-lived subscription token (the CLI's ``setup-token``), for
  ``CLAUDE_CODE_OAUTH_TOKEN`` (Docker, servers, CI);
- ``claude-code-proxy claude ARGS...``: anything else, e.g. ``claude-code-proxy claude auth status``.

The CLI replaces this process (exec), so it owns the terminal, its signals and its exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

# The CLI's updater, telemetry and other side traffic stay off, as for every CLI the proxy
# starts: the CLI's version is the locked one, and nothing else leaves the machine.
QUIET_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}
COMMANDS = ("login", "setup-token", "claude")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    login = subparsers.add_parser(
        "login",
        help="log the proxy's Claude Code CLI in (its own sign-in, in the config dir the proxy uses)",
        description="Sign in with the Claude Code CLI that the proxy runs; the login is stored in "
        "CLAUDE_CONFIG_DIR (default ~/.claude), where the proxy reads it.",
    )
    login.add_argument("--console", action="store_true", help="an Anthropic Console (API billing) account")
    login.add_argument("--sso", action="store_true", help="sign in with SSO")
    login.add_argument("--email", help="fill in this email address on the sign-in page")
    subparsers.add_parser(
        "setup-token",
        help="create a long-lived subscription token for CLAUDE_CODE_OAUTH_TOKEN (Docker, servers)",
        description="Run the Claude Code CLI's `setup-token`: it prints a one-year token; start the "
        "proxy with CLAUDE_CODE_OAUTH_TOKEN=<token> in its environment (with Docker Compose: in .env).",
    )
    # Parsed by hand in main(): every argument after `claude` belongs to the CLI, --help included.
    subparsers.add_parser(
        "claude",
        help="run the proxy's Claude Code CLI with any arguments (e.g. `claude-code-proxy claude auth status`)",
        add_help=False,
    )


def cli_arguments(command: str, args: argparse.Namespace | None = None, rest: Sequence[str] = ()) -> list[str]:
    """The CLI's arguments for one of COMMANDS."""
    if command == "login":
        argv = ["auth", "login"]
        if args is not None:
            argv += ["--console"] if args.console else []
            argv += ["--sso"] if args.sso else []
            argv += ["--email", args.email] if args.email else []
        return argv
    if command == "setup-token":
        return ["setup-token"]
    return list(rest)


def cli_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment (terminal, browser, proxies, credentials) with side traffic off."""
    return {**environ, **QUIET_ENV}


def config_dir(environ: Mapping[str, str]) -> str:
    """Where the CLI keeps its login: what the proxy's CLIs will read."""
    configured = environ.get("CLAUDE_CONFIG_DIR", "").strip()
    if configured:
        return configured
    return str(Path(environ.get("HOME") or Path.home()) / ".claude")


def find_proxy_cli() -> tuple[str | None, str | None]:
    """(path of the CLI the proxy runs, None) or (None, why not)."""
    from claude_code_proxy.config.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        names = ", ".join("CLAUDE_PROXY_" + ".".join(str(p) for p in err["loc"]).upper() for err in exc.errors())
        return None, f"the configuration is invalid ({names}); `claude-code-proxy doctor` says how to fix it."
    path = settings.resolved_cli_path()
    if path is None or not (os.path.isfile(path) and os.access(path, os.X_OK)):
        where = path or "the claude-agent-sdk wheel's bundled CLI"
        return None, (
            f"the Claude Code CLI was not found ({where}). Reinstall the proxy (`make clean install` in its "
            "directory; the claude-agent-sdk wheel bundles the CLI) or set CLAUDE_PROXY_CLI_PATH."
        )
    return path, None


def run(command: str, args: argparse.Namespace | None = None, rest: Sequence[str] = ()) -> int:
    """Exec the proxy's CLI for ``command``; returns only when that is impossible."""
    path, problem = find_proxy_cli()
    if path is None:
        print(f"claude-code-proxy: {problem}", file=sys.stderr)
        return 1
    env = cli_environment(os.environ)
    if command == "login":
        print(f"claude-code-proxy: signing in with the proxy's Claude Code CLI ({path}). The login is kept "
              f"in {config_dir(env)}, where the proxy reads it; check it afterwards with "
              "`claude-code-proxy doctor`.", file=sys.stderr, flush=True)
    elif command == "setup-token":
        print(f"claude-code-proxy: creating a long-lived token with the proxy's Claude Code CLI ({path}). "
              "Then start the proxy with CLAUDE_CODE_OAUTH_TOKEN=<the token> in its environment "
              "(with Docker Compose: in .env).", file=sys.stderr, flush=True)
    argv = [path, *cli_arguments(command, args, rest)]
    sys.stdout.flush()
    try:
        os.execve(path, argv, env)  # noqa: S606 - the CLI the proxy itself runs, argv as given
    except OSError as exc:
        print(f"claude-code-proxy: cannot run {path}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0  # not reached: execve only returns by raising
