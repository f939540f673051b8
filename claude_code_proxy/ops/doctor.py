"""``claude-code-proxy doctor``: what is wrong with this installation, and how to fix it.

Checks, in order: the CLI is found (path, version); it is logged in (method,
subscription type); the configuration loads (settings that differ from the defaults,
secrets masked); the port is free; and, only with ``--live``, a one-token request
through the real CLI.  Each failure carries a one-line fix.  ``--json`` prints the same
report for scripts; the exit code is 1 when any check failed, else 0.

Nothing here prints a secret: SecretStr settings and any setting or variable whose
name says key, token, secret or password are shown as a fixed mask.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

import anyio
from pydantic import SecretStr, ValidationError

from claude_code_proxy import __version__
from claude_code_proxy.config.settings import Settings, is_loopback

if TYPE_CHECKING:  # the client module imports the SDK: loaded only when a check runs
    from claude_code_proxy.backend.base import CliStatus
    from claude_code_proxy.backend.claude import ClaudeClient

Status = Literal["ok", "warn", "fail", "skip"]

MASK = "********"
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
# Credentials the CLI reads from the environment; reported as set / not set only.
CREDENTIAL_ENV = ("CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
ENV_PREFIX = "CLAUDE_PROXY_"

CLI_FIX = (
    "Reinstall the proxy (`make clean install` in its directory; its claude-agent-sdk dependency "
    "bundles the CLI) or set CLAUDE_PROXY_CLI_PATH to a `claude` executable."
)
LOGIN_FIX = (
    "Run `claude-code-proxy login` (the CLI's own sign-in, kept in CLAUDE_CONFIG_DIR, default ~/.claude), "
    "or `claude-code-proxy setup-token` and export the token as CLAUDE_CODE_OAUTH_TOKEN "
    "(with Docker Compose: `docker compose run --rm proxy setup-token`, then put it in .env), "
    "or set ANTHROPIC_API_KEY."
)
ENV_FILE_HINT = (
    " Note: .env names {names}, but the proxy reads only CLAUDE_PROXY_* settings from .env; "
    "the CLI sees a credential only from the real environment (Docker's env_file does put it there)."
)


@dataclass
class Check:
    """One line of the report."""

    name: str
    title: str
    status: Status
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "details": self.details,
            "fix": self.fix,
        }


# -- argparse -----------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``doctor`` to the CLI's subcommands; the caller dispatches to ``run(args)``."""
    parser = subparsers.add_parser(
        "doctor",
        help="check the CLI, login, configuration and port, and say how to fix what is wrong",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print the report as JSON (for scripts)")
    parser.add_argument(
        "--live",
        action="store_true",
        help="also send a one-token request through the CLI (spends a tiny amount of quota)",
    )
    parser.add_argument("--host", help="address to check (default from CLAUDE_PROXY_HOST)")
    parser.add_argument("--port", type=int, help="port to check (default from CLAUDE_PROXY_PORT)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds the --live request may take (default 60)"
    )
    return parser


def run(args: argparse.Namespace, settings: Settings | None = None, out: TextIO | None = None) -> int:
    """Run every check, print the report, return the exit code (0 all passed, 1 otherwise).

    ``settings`` is for tests and embedding; by default it is loaded like ``serve`` does
    (environment, then ``.env``), with ``--host``/``--port`` applied on top.
    """
    stream = out if out is not None else sys.stdout
    checks = anyio.run(_run_checks, args, settings)
    if getattr(args, "json", False):
        report = {
            "ok": not any(c.status == "fail" for c in checks),
            "version": __version__,
            "checks": [c.as_json() for c in checks],
        }
        stream.write(json.dumps(report, indent=2) + "\n")
    else:
        stream.write(render(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


# -- the checks -------------------------------------------------------------------


async def _run_checks(args: argparse.Namespace, settings: Settings | None) -> list[Check]:
    overrides = {
        key: value
        for key, value in {"host": getattr(args, "host", None), "port": getattr(args, "port", None)}.items()
        if value is not None
    }
    config_check, loaded = check_config(settings, overrides)
    if loaded is None:
        reason = "skipped: fix the configuration first"
        return [
            Check("cli", "Claude Code CLI", "skip", reason),
            Check("login", "Login", "skip", reason),
            config_check,
            Check("port", "Port", "skip", reason),
            Check("live", "Live check", "skip", reason),
        ]

    from claude_code_proxy.backend.admission import Admission
    from claude_code_proxy.backend.claude import ClaudeClient

    client = ClaudeClient(loaded, Admission(1, 0, 1.0))
    status = await client.status(refresh=True)
    checks = [check_cli(status), check_login(status), config_check, check_port(loaded.host, loaded.port)]
    if getattr(args, "live", False):
        if not (status.found and status.logged_in):
            checks.append(Check("live", "Live check", "skip", "skipped: the CLI is not found or not logged in"))
        else:
            try:
                checks.append(await check_live(client, loaded, float(getattr(args, "timeout", 60.0))))
            finally:
                await client.aclose()  # the CLI it started, and its directory, are gone
    else:
        checks.append(Check("live", "Live check", "skip", "not run (add --live to send a one-token request)"))
    return checks


def check_cli(status: CliStatus) -> Check:
    details = {"path": status.path, "version": status.version}
    if not status.found:
        where = status.path or "the SDK's bundled CLI or `claude` on PATH"
        return Check(
            "cli", "Claude Code CLI", "fail", f"not found or not executable: {where}", details, CLI_FIX
        )
    if not status.version:
        return Check(
            "cli",
            "Claude Code CLI",
            "fail",
            f"found at {status.path} but `--version` failed",
            details,
            "Check the file is the Claude Code CLI for this platform and runs (`" + str(status.path)
            + " --version`); otherwise " + CLI_FIX[0].lower() + CLI_FIX[1:],
        )
    return Check("cli", "Claude Code CLI", "ok", f"{status.path} (version {status.version})", details)


def check_login(status: CliStatus) -> Check:
    details: dict[str, Any] = {
        "logged_in": status.logged_in,
        "auth_method": status.auth_method,
        "subscription_type": status.subscription_type,
        "api_key_source": status.api_key_source,
        "credential_env": {name: ("set" if os.environ.get(name) else "not set") for name in CREDENTIAL_ENV},
    }
    if not status.found:
        return Check("login", "Login", "skip", "skipped: no CLI to ask", details)
    if status.logged_in is None:
        return Check(
            "login", "Login", "fail", "the CLI's `auth status` gave no answer", details,
            "Run `claude-code-proxy claude auth status` to see why; then " + LOGIN_FIX[0].lower() + LOGIN_FIX[1:],
        )
    if not status.logged_in:
        fix = LOGIN_FIX
        in_file = [name for name in _env_file_names() if name in CREDENTIAL_ENV and not os.environ.get(name)]
        if in_file:
            fix += ENV_FILE_HINT.format(names=", ".join(in_file))
        return Check("login", "Login", "fail", "not logged in", details, fix)
    method = status.auth_method or "unknown method"
    subscription = status.subscription_type or "none"
    summary = f"logged in with {method} (subscription: {subscription})"
    has_api_key = bool(os.environ.get("ANTHROPIC_API_KEY"))
    if has_api_key and (os.environ.get("CLAUDE_CODE_OAUTH_TOKEN") or status.subscription_type):
        return Check(
            "login", "Login", "warn",
            summary + "; ANTHROPIC_API_KEY is set and wins over the subscription",
            details,
            "Unset ANTHROPIC_API_KEY unless you mean to pay per token on the API.",
        )
    return Check("login", "Login", "ok", summary, details)


def check_config(settings: Settings | None, overrides: dict[str, Any]) -> tuple[Check, Settings | None]:
    """Load the settings (unless given) and list what differs from the defaults, masked."""
    env_file = os.path.abspath(".env")
    details: dict[str, Any] = {}
    if settings is None:
        details["env_file"] = env_file if os.path.isfile(env_file) else None
        try:
            settings = Settings(**overrides)
        except ValidationError as exc:
            # Locations and messages only: pydantic's text would echo the bad input values.
            errors = [
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
            ]
            details["errors"] = errors
            return (
                Check("config", "Configuration", "fail", "invalid: " + "; ".join(errors), details,
                      "Correct these variables in the environment or .env (see .env.example)."),
                None,
            )
    elif overrides:
        settings = settings.model_copy(update=overrides)
    changed = changed_settings(settings)
    details["changed"] = changed
    names = set(os.environ) | (_env_file_names() if details.get("env_file") else set())
    unknown = sorted(
        key for key in names
        if key.upper().startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower() not in Settings.model_fields
    )
    details["unknown_env"] = unknown
    summary = (
        f"{len(changed)} setting(s) differ from the defaults" if changed else "all settings at their defaults"
    )
    if not is_loopback(settings.host) and settings.api_key is None:
        return (
            Check("config", "Configuration", "fail",
                  f"{summary}; host {settings.host} is not loopback and CLAUDE_PROXY_API_KEY is empty",
                  details,
                  "Set CLAUDE_PROXY_API_KEY to a long random string (e.g. `openssl rand -hex 32`), "
                  "or bind 127.0.0.1."),
            settings,
        )
    if unknown:
        return (
            Check("config", "Configuration", "warn", f"{summary}; unknown variables: {', '.join(unknown)}",
                  details, "Remove or correct these names (the known ones are listed in .env.example)."),
            settings,
        )
    return Check("config", "Configuration", "ok", summary, details), settings


def _env_file_names() -> set[str]:
    """Variable names in ./.env (the file Settings reads), values never kept."""
    if not os.path.isfile(".env"):
        return set()
    from dotenv import dotenv_values

    try:
        return set(dotenv_values(".env"))
    except (OSError, UnicodeDecodeError):
        return set()


def changed_settings(settings: Settings) -> dict[str, Any]:
    """Settings whose value differs from the field default, secrets masked."""
    changed: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        default = info.get_default(call_default_factory=True)
        if name == "model_aliases" and isinstance(value, dict):
            # The configured table extends the built-in one; show only what was added or changed.
            value = {k: v for k, v in value.items() if default.get(k) != v}
            default = {}
        if value == default:
            continue
        changed[name] = mask(name, value)
    return changed


def mask(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, SecretStr) or any(word in name.upper() for word in _SECRET_WORDS):
        return MASK
    return value


def check_port(host: str, port: int, probe_timeout: float = 1.0) -> Check:
    """Can ``serve`` bind host:port?  Binds the way uvicorn does (SO_REUSEADDR), then lets go."""
    details: dict[str, Any] = {"host": host, "port": port}
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return Check("port", "Port", "fail", f"cannot resolve host {host!r}: {exc.strerror}", details,
                     "Set CLAUDE_PROXY_HOST to an address of this machine (127.0.0.1 by default).")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            details["errno"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            if exc.errno == errno.EADDRINUSE:
                if _is_our_proxy(host, port, probe_timeout):
                    details["in_use_by"] = "claude-code-proxy"
                    return Check("port", "Port", "warn", f"{where} is in use by a running claude-code-proxy",
                                 details, "Nothing to fix if that is the server you meant to run; "
                                 "stop it first to start another one, or set CLAUDE_PROXY_PORT.")
                return Check("port", "Port", "fail", f"{where} is in use by another program", details,
                             f"Stop the program listening there (`ss -ltnp 'sport = :{port}'` shows it) "
                             "or set CLAUDE_PROXY_PORT to a free port.")
            if exc.errno == errno.EACCES:
                return Check("port", "Port", "fail", f"not allowed to bind {where}", details,
                             "Use a port above 1023 (CLAUDE_PROXY_PORT), or run with the needed privilege.")
            if exc.errno == errno.EADDRNOTAVAIL:
                return Check("port", "Port", "fail", f"{host} is not an address of this machine", details,
                             "Set CLAUDE_PROXY_HOST to 127.0.0.1 (or an address this machine has).")
            return Check("port", "Port", "fail", f"cannot bind {where}: {exc.strerror}", details,
                         "Set CLAUDE_PROXY_HOST / CLAUDE_PROXY_PORT to an address and port you may bind.")
    return Check("port", "Port", "ok", f"{where} is free", details)


def _is_our_proxy(host: str, port: int, timeout: float) -> bool:
    """Does a claude-code-proxy answer on host:port?  Loopback only, liveness route only."""
    target = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host
    if ":" in target and not target.startswith("["):
        target = f"[{target}]"
    if not is_loopback(target.strip("[]")):
        return False
    url = f"http://{target}:{port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read(4096))
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok"


async def check_live(client: ClaudeClient, settings: Settings, timeout: float) -> Check:
    """One request with max_tokens=1 through the real CLI and the configured upstream."""
    from claude_code_proxy.backend.admission import Admission
    from claude_code_proxy.chat.answer import Completion
    from claude_code_proxy.chat.request import ChatRequest
    from claude_code_proxy.exceptions import (
        AuthenticationError,
        ClaudeProxyError,
        NotLoggedInError,
        OverloadedError,
        RateLimitError,
    )

    request = ChatRequest(
        model=settings.default_model,
        messages=[{"role": "user", "content": "Reply with the single word: ok"}],
        max_tokens=1,
    )
    details: dict[str, Any] = {"model": settings.default_model, "max_tokens": 1}
    started = time.monotonic()
    first: float | None = None
    completion: Completion | None = None
    try:
        with anyio.fail_after(timeout):
            async for item in client.run(request, await Admission(1, 0, 1.0).enter()):
                if isinstance(item, Completion):
                    completion = item
                elif first is None and item.get("type") == "content_block_delta":
                    first = time.monotonic() - started
    except TimeoutError:
        return Check("live", "Live check", "fail", f"no answer within {timeout:g} s", details,
                     "Check the network path to the Anthropic API (proxy, firewall), then retry; "
                     "raise --timeout on a slow link.")
    except ClaudeProxyError as exc:
        details["error"] = type(exc).__name__
        if isinstance(exc, NotLoggedInError | AuthenticationError):
            fix = LOGIN_FIX
        elif isinstance(exc, RateLimitError):
            fix = "The subscription's rate limit is reached; wait for the window to reset, then retry."
        elif isinstance(exc, OverloadedError):
            fix = "The API is overloaded; retry in a minute."
        elif exc.status_code == 504:
            fix = "Check the network path to the Anthropic API, then retry."
        else:
            fix = "Run with --json for details, and check the CLI works by itself (`claude-code-proxy claude -p hi`)."
        return Check("live", "Live check", "fail", f"the request failed: {exc.message}", details, fix)
    elapsed = time.monotonic() - started
    details["seconds"] = round(elapsed, 3)
    details["first_token_seconds"] = None if first is None else round(first, 3)
    if completion is not None:
        details.update({"model_used": completion.model, "stop_reason": completion.stop_reason,
                        "usage": completion.usage})
    return Check("live", "Live check", "ok",
                 f"one-token answer from {completion.model if completion else settings.default_model} "
                 f"in {elapsed:.1f} s", details)


# -- output ---------------------------------------------------------------------------

_MARK = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]", "skip": "[skip]"}


def render(checks: Sequence[Check]) -> str:
    lines = [f"claude-code-proxy {__version__} doctor", ""]
    width = max(len(c.title) for c in checks)
    for check in checks:
        lines.append(f"{_MARK[check.status]} {check.title.ljust(width)}  {check.summary}")
        if check.name == "config":
            for name, value in check.details.get("changed", {}).items():
                shown = json.dumps(value) if not isinstance(value, str) else value
                lines.append(f"{'':7}{'':{width}}    {name} = {_shorten(shown)}")
        if check.fix and check.status in ("fail", "warn"):
            lines.append(f"{'':7}{'':{width}}    fix: {check.fix}")
    failed = sum(c.status == "fail" for c in checks)
    lines.append("")
    lines.append(f"{failed} problem(s) found." if failed else "No problems found.")
    return "\n".join(lines) + "\n"


def _shorten(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    """``python -m claude_code_proxy.ops.doctor``; ``claude-code-proxy doctor`` is the usual way."""
    parser = configure_parser(argparse.ArgumentParser(prog="claude-code-proxy doctor"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
