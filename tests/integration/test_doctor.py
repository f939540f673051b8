"""``claude-code-proxy doctor``, against the real bundled CLI and the fake upstream.

The session fixture ``cli_env`` logs the CLI in with a fake ANTHROPIC_API_KEY and points it
at the fake upstream, so the happy path is real end to end; failures are made by
configuration (a missing CLI, a busy port, an invalid setting, no credentials).
"""

from __future__ import annotations

import argparse
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claude_code_proxy.config.settings import Settings
from claude_code_proxy.exceptions import RateLimitError
from claude_code_proxy.ops import doctor
from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.procs import cli_processes, wait_until
from tests.support.server import RunningServer

CANARIES = ("canary-proxy-key-4f1c", "canary-oauth-token-9d2e", "canary-unknown-7a7a", "canary-bad-value-3b3b")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse(*argv: str) -> argparse.Namespace:
    """Through add_parser, the way the main CLI wires the subcommand in."""
    parser = argparse.ArgumentParser(prog="claude-code-proxy")
    commands = parser.add_subparsers(dest="command", required=True)
    doctor.add_parser(commands)
    return parser.parse_args(["doctor", *argv])


def run(*argv: str, settings: Settings | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = doctor.run(parse(*argv), settings=settings, out=out)
    return code, out.getvalue()


def run_json(*argv: str, settings: Settings | None = None) -> tuple[int, dict[str, Any], dict[str, Any]]:
    code, text = run("--json", *argv, settings=settings)
    report = json.loads(text)
    return code, report, {check["name"]: check for check in report["checks"]}


@pytest.fixture()
def settings() -> Settings:
    return make_settings(port=free_port())


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run from an empty directory, so no ./.env is read."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_add_parser_registers_the_subcommand() -> None:
    args = parse("--json", "--live", "--port", "9999", "--host", "127.0.0.1", "--timeout", "5")
    assert (args.command, args.json, args.live, args.port, args.host, args.timeout) == (
        "doctor", True, True, 9999, "127.0.0.1", 5.0
    )
    defaults = parse()
    assert not defaults.json and not defaults.live and defaults.port is None


def test_happy_path(settings: Settings, upstream: FakeUpstream) -> None:
    code, text = run(settings=settings)
    assert code == 0, text
    assert "[ ok ] Claude Code CLI" in text and "_bundled/claude" in text
    assert "[ ok ] Login" in text and "logged in with" in text
    assert "[ ok ] Configuration" in text and "warm_pool_size = 0" in text
    assert f"[ ok ] Port             127.0.0.1:{settings.port} is free" in text
    assert "[skip] Live check" in text and "--live" in text
    assert "fix:" not in text and text.rstrip().endswith("No problems found.")
    assert upstream.messages_calls == []  # without --live nothing reaches the model


def test_happy_path_json(settings: Settings) -> None:
    code, report, checks = run_json(settings=settings)
    assert code == 0
    assert report["ok"] is True and report["version"]
    assert list(checks) == ["cli", "login", "config", "port", "live"]
    for check in report["checks"]:
        assert set(check) == {"name", "status", "summary", "details", "fix"}
        assert check["status"] in ("ok", "warn", "fail", "skip")
        assert isinstance(check["summary"], str) and isinstance(check["details"], dict)
    assert checks["cli"]["status"] == "ok"
    assert checks["cli"]["details"]["path"].endswith("/claude")
    assert checks["cli"]["details"]["version"][0].isdigit()
    assert checks["login"]["status"] == "ok"
    assert checks["login"]["details"]["logged_in"] is True
    assert checks["login"]["details"]["auth_method"]
    assert "subscription_type" in checks["login"]["details"]
    assert checks["login"]["details"]["credential_env"]["ANTHROPIC_API_KEY"] == "set"
    assert checks["config"]["details"]["changed"] == {
        "port": settings.port, "log_level": "WARNING", "usage_db": "", "warm_pool_size": 0,
    }
    assert checks["port"]["details"] == {"host": "127.0.0.1", "port": settings.port}
    assert checks["live"]["status"] == "skip"


def test_missing_cli(settings: Settings) -> None:
    missing = settings.model_copy(update={"cli_path": "/nonexistent"})
    code, text = run(settings=missing)
    assert code == 1
    assert "[FAIL] Claude Code CLI  not found or not executable: /nonexistent" in text
    assert "fix: " in text and "CLAUDE_PROXY_CLI_PATH" in text
    assert "[skip] Login" in text
    assert "1 problem(s) found." in text

    code, report, checks = run_json(settings=missing)
    assert code == 1 and report["ok"] is False
    assert checks["cli"]["status"] == "fail" and "CLAUDE_PROXY_CLI_PATH" in checks["cli"]["fix"]
    assert checks["config"]["details"]["changed"]["cli_path"] == "/nonexistent"


def test_cli_that_is_not_executable(settings: Settings, tmp_path: Path) -> None:
    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\necho 1.0\n")
    fake.chmod(0o644)
    code, _, checks = run_json(settings=settings.model_copy(update={"cli_path": str(fake)}))
    assert code == 1 and checks["cli"]["status"] == "fail"


def test_cli_that_does_not_run(settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "claude"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    code, _, checks = run_json(settings=settings.model_copy(update={"cli_path": str(broken)}))
    assert code == 1
    assert checks["cli"]["status"] == "fail" and "--version" in checks["cli"]["summary"]
    assert checks["login"]["status"] == "fail" and checks["login"]["fix"]


def test_not_logged_in(settings: Settings, monkeypatch: pytest.MonkeyPatch, in_tmp: Path) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(in_tmp / "empty-config"))
    (in_tmp / ".env").write_text("CLAUDE_CODE_OAUTH_TOKEN=" + CANARIES[1] + "\n")
    code, text = run(settings=settings)
    assert code == 1
    assert "[FAIL] Login            not logged in" in text
    # The fix names commands that exist after an install (the CLI itself is not on PATH).
    fix = text.split("[FAIL] Login", 1)[1].split("[", 1)[0]
    assert "`claude-code-proxy login`" in fix and "`claude-code-proxy setup-token`" in fix
    assert "CLAUDE_CODE_OAUTH_TOKEN" in fix and "`claude setup-token`" not in fix and "/login" not in fix
    # The token sits in .env, which only configures the proxy: the fix says so.
    assert "the proxy reads only CLAUDE_PROXY_* settings from .env" in text
    assert CANARIES[1] not in text


def test_busy_port(settings: Settings) -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        code, text = run(settings=settings.model_copy(update={"port": port}))
        _, _, checks = run_json("--port", str(port), settings=settings)
    assert code == 1
    assert f"[FAIL] Port             127.0.0.1:{port} is in use by another program" in text
    assert "CLAUDE_PROXY_PORT" in text.split("[FAIL] Port", 1)[1]
    assert checks["port"]["status"] == "fail" and checks["port"]["details"]["errno"] == "EADDRINUSE"


def test_port_taken_by_a_running_proxy_is_a_warning(settings: Settings, server: RunningServer) -> None:
    code, _, checks = run_json("--port", str(server.port), settings=settings)
    assert code == 0
    assert checks["port"]["status"] == "warn"
    assert checks["port"]["details"]["in_use_by"] == "claude-code-proxy"


def test_secrets_are_masked(settings: Settings, monkeypatch: pytest.MonkeyPatch, in_tmp: Path) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", CANARIES[1])
    monkeypatch.setenv("CLAUDE_PROXY_SECRET_TOKEN", CANARIES[2])  # unknown setting: named, not shown
    keyed = settings.model_copy(update={"api_key": doctor.SecretStr(CANARIES[0])})
    code, text = run(settings=keyed)
    code_json, json_text = run("--json", settings=keyed)
    for output in (text, json_text):
        for canary in CANARIES:
            assert canary not in output
    assert f"api_key = {doctor.MASK}" in text
    checks = {c["name"]: c for c in json.loads(json_text)["checks"]}
    assert checks["config"]["details"]["changed"]["api_key"] == doctor.MASK
    assert checks["config"]["status"] == "warn"
    assert checks["config"]["details"]["unknown_env"] == ["CLAUDE_PROXY_SECRET_TOKEN"]
    assert checks["login"]["details"]["credential_env"]["CLAUDE_CODE_OAUTH_TOKEN"] == "set"
    # With both an API key and a subscription token, the key wins: a warning, not a failure.
    assert checks["login"]["status"] == "warn" and "ANTHROPIC_API_KEY" in checks["login"]["fix"]
    assert code == code_json == 0


def test_mask_rules() -> None:
    assert doctor.mask("api_key", doctor.SecretStr("x")) == doctor.MASK
    assert doctor.mask("some_token", "visible?") == doctor.MASK
    assert doctor.mask("port", 8000) == 8000
    assert doctor.mask("api_key", None) is None


def test_invalid_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch, in_tmp: Path) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_MAX_CONCURRENCY", CANARIES[3])
    code, text = run()
    assert code == 1
    assert "[FAIL] Configuration    invalid: CLAUDE_PROXY_MAX_CONCURRENCY" in text
    assert "fix:" in text and "[skip] Claude Code CLI" in text
    assert CANARIES[3] not in text  # pydantic's message would echo the bad input


def test_settings_are_loaded_from_env_and_dotenv(monkeypatch: pytest.MonkeyPatch, in_tmp: Path) -> None:
    port = free_port()
    (in_tmp / ".env").write_text(f"CLAUDE_PROXY_PORT={port}\nCLAUDE_PROXY_DEFAULT_MODLE=haiku\n")
    code, report, checks = run_json()
    assert code == 0, report
    assert checks["config"]["details"]["changed"] == {"port": port}
    assert checks["config"]["details"]["env_file"] == str(in_tmp / ".env")
    assert checks["config"]["details"]["unknown_env"] == ["CLAUDE_PROXY_DEFAULT_MODLE"]
    assert checks["port"]["details"]["port"] == port


def test_non_loopback_bind_without_a_key_fails(settings: Settings) -> None:
    exposed = settings.model_copy(update={"host": "0.0.0.0"})
    code, _, checks = run_json(settings=exposed)
    assert code == 1
    assert checks["config"]["status"] == "fail" and "CLAUDE_PROXY_API_KEY" in checks["config"]["fix"]
    keyed = exposed.model_copy(update={"api_key": doctor.SecretStr("k" * 32)})
    code, _, checks = run_json(settings=keyed)
    assert checks["config"]["status"] == "ok" and code == 0


def test_live_check_sends_a_one_token_request(settings: Settings, upstream: FakeUpstream) -> None:
    code, report, checks = run_json("--live", settings=settings)
    assert code == 0, report
    live = checks["live"]
    assert live["status"] == "ok"
    assert live["details"]["max_tokens"] == 1 and live["details"]["stop_reason"] == "max_tokens"
    assert live["details"]["usage"]["output_tokens"] == 1
    # The CLI is gone (killed at the answer's end): no continuation request (the CLI's own,
    # after max_tokens) can come any more.
    assert wait_until(lambda: not cli_processes())
    calls = upstream.messages_calls
    assert len(calls) == 1
    assert calls[0].body["max_tokens"] == 1
    assert calls[0].body.get("tools", []) == []


def test_live_human_output(settings: Settings, upstream: FakeUpstream) -> None:
    code, text = run("--live", settings=settings)
    assert code == 0
    assert "[ ok ] Live check       one-token answer from" in text
    assert upstream.messages_calls[0].body["max_tokens"] == 1


def test_live_is_skipped_when_the_cli_is_missing(settings: Settings, upstream: FakeUpstream) -> None:
    code, _, checks = run_json("--live", settings=settings.model_copy(update={"cli_path": "/nonexistent"}))
    assert code == 1 and checks["live"]["status"] == "skip"
    assert upstream.messages_calls == []


async def test_live_failure_has_a_fix(settings: Settings) -> None:
    class RateLimited:
        async def run(self, request: Any, ticket: Any) -> Any:
            raise RateLimitError("Rate limited by the upstream API; retry later.")
            yield  # pragma: no cover - makes this an async generator

    check = await doctor.check_live(RateLimited(), settings, timeout=5)  # type: ignore[arg-type]
    assert check.status == "fail" and check.fix and "rate limit" in check.fix
    assert check.details["error"] == "RateLimitError"


async def test_live_timeout(settings: Settings) -> None:
    import anyio

    class Hangs:
        async def run(self, request: Any, ticket: Any) -> Any:
            await anyio.sleep(30)
            yield  # pragma: no cover

    check = await doctor.check_live(Hangs(), settings, timeout=0.2)  # type: ignore[arg-type]
    assert check.status == "fail" and "0.2 s" in check.summary and check.fix
