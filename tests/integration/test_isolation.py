"""The CLI is a plain model, whatever the request carries: its argv, environment and
working directory, recorded by a wrapper in front of the real bundled CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.procs import wait_until
from tests.support.recording_cli import RecordingCli, Spawn, make_recording_cli
from tests.support.server import RunningServer, serve

REQUIRED_FLAGS = ["--strict-mcp-config", "--setting-sources=", "--restricted", "--no-session-persistence"]
FORBIDDEN_FLAGS = ["--allowedTools", "--add-dir", "--settings", "--dangerously-skip-permissions",
                   "--resume", "--continue", "--plugin-dir", "bypassPermissions", "acceptEdits"]


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> RecordingCli:
    return make_recording_cli(tmp_path_factory.mktemp("recording-cli"))


@pytest.fixture(scope="module")
def recorded_server(recorder: RecordingCli, cli_env: Path) -> Iterator[RunningServer]:
    with serve(make_settings(cli_path=str(recorder.path))) as running:
        yield running


def post(server: RunningServer, body: dict[str, object], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/messages", json=body, headers=headers or {}, timeout=60)


def only_spawn(recorder: RecordingCli) -> Spawn:
    spawns = recorder.spawns()
    assert len(spawns) == 1, [s.argv for s in spawns]
    return spawns[0]


def normalized(spawn: Spawn) -> tuple[list[str], dict[str, str]]:
    """argv and env with the per-request directory names and relay paths taken out."""
    def strip(value: str) -> str:
        value = re.sub(r"claude-proxy-[A-Za-z0-9_]+", "claude-proxy-X", value)
        return re.sub(r"^(http://127\.0\.0\.1:\d+/)[\w-]+$", r"\1X", value)
    return [strip(a) for a in spawn.argv[1:]], {k: strip(v) for k, v in spawn.env.items()}


def test_cli_runs_with_tools_off_and_no_user_config(recorded_server: RunningServer, recorder: RecordingCli) -> None:
    recorder.clear()
    assert post(recorded_server, {"model": "sonnet", "max_tokens": 20,
                                  "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    spawn = only_spawn(recorder)
    argv = spawn.argv
    assert argv[argv.index("--tools") + 1] == ""
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    for flag in REQUIRED_FLAGS:
        assert flag in argv
    for flag in FORBIDDEN_FLAGS:
        assert not any(a.startswith(flag) or a == flag for a in argv), flag
    assert "--mcp-config" not in argv


def test_child_environment_is_an_allow_list(
    recorded_server: RunningServer, recorder: RecordingCli, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_API_KEY", "canary-proxy-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-aws-secret")
    recorder.clear()
    assert post(recorded_server, {"model": "sonnet", "max_tokens": 20,
                                  "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    env = only_spawn(recorder).env
    assert "canary" not in repr(env)
    # The CLI calls upstream through the proxy's relay (backend/relay.py, a secret path of its
    # own on 127.0.0.1), which goes on to the upstream the proxy was given (the fake, here:
    # not the first-party API, so the CLI is not told it is).
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/[\w-]{20,}", env["ANTHROPIC_BASE_URL"])
    assert not env.get("_CLAUDE_CODE_ASSUME_FIRST_PARTY_BASE_URL")
    assert "127.0.0.1" in env["NO_PROXY"].split(",")  # the relay is never reached through a proxy
    assert [call.path for call in upstream.messages_calls] == ["/v1/messages?beta=true"]
    assert env["DISABLE_AUTOUPDATER"] == "1" and env["DISABLE_TELEMETRY"] == "1"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "20"


def test_neutral_working_directory_and_fresh_private_directory_removed_afterwards(
    recorded_server: RunningServer, recorder: RecordingCli
) -> None:
    recorder.clear()
    for _ in range(2):
        assert post(recorded_server, {"model": "sonnet", "max_tokens": 20,
                                      "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    spawns = recorder.spawns()
    assert len(spawns) == 2
    # One constant working directory, so the CLI's environment note is the same every time.
    assert [s.cwd for s in spawns] == ["/", "/"]
    private = [Path(s.env["CLAUDE_CODE_TMPDIR"]).parent for s in spawns]
    assert private[0] != private[1]
    for path in private:
        assert path.name.startswith("claude-proxy-")
        assert wait_until(lambda p=path: not p.exists()), "the directory must be removed"


def test_request_fields_and_headers_cannot_change_the_cli(
    recorded_server: RunningServer, recorder: RecordingCli, upstream: FakeUpstream
) -> None:
    base = {"model": "sonnet", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    recorder.clear()
    assert post(recorded_server, base).status_code == 200
    baseline = normalized(only_spawn(recorder))
    hostile: dict[str, object] = {
        **base,
        "enable_tools": True, "permission_mode": "bypassPermissions", "allowed_tools": ["Bash"],
        "cwd": "/", "mcp_servers": {"x": {"command": "sh"}}, "settings": '{"permissions":{"allow":["Bash"]}}',
        "extra_args": {"dangerously-skip-permissions": None}, "extra_body": {"tools": ["Bash"]},
        "user": "root", "metadata": {"user_id": "--resume=abc"}, "resume": "abc", "add_dirs": ["/"],
        "env": {"ANTHROPIC_BASE_URL": "http://evil.example"}, "cli_path": "/bin/sh",
    }
    headers = {"x-tool-cwd": "/", "x-claude-permission-mode": "bypassPermissions",
               "anthropic-beta": "tools-2099", "x-claude-code-tools": "Bash"}
    recorder.clear()
    assert post(recorded_server, hostile, headers).status_code == 200
    assert normalized(only_spawn(recorder)) == baseline
    assert upstream.last_body["tools"] == []


def test_the_only_settings_file_is_the_proxys_own_with_the_extra_body(
    recorded_server: RunningServer, recorder: RecordingCli, upstream: FakeUpstream
) -> None:
    """Stop sequences and tool_choice travel in a settings file the proxy writes in the
    request's private directory (an environment variable would be limited to 128 KiB): it
    holds that one variable and nothing that could configure the CLI otherwise."""
    recorder.clear()
    body = {"model": "sonnet", "max_tokens": 20, "stop_sequences": ["END"],
            "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "auto"}, "messages": [{"role": "user", "content": "hi"}]}
    assert post(recorded_server, body).status_code == 200
    spawn = only_spawn(recorder)
    path = spawn.argv[spawn.argv.index("--settings") + 1]
    assert Path(path).parent.name.startswith("claude-proxy-")
    assert spawn.settings is not None
    settings = json.loads(spawn.settings)
    assert list(settings) == ["env"] and list(settings["env"]) == ["CLAUDE_CODE_EXTRA_BODY"]
    assert json.loads(settings["env"]["CLAUDE_CODE_EXTRA_BODY"]) == {
        "stop_sequences": ["END"], "tool_choice": {"type": "auto"}}
    assert "CLAUDE_CODE_EXTRA_BODY" not in {k for k, v in spawn.env.items() if v}
    assert upstream.last_body["stop_sequences"] == ["END"]
    assert upstream.last_body["tool_choice"] == {"type": "auto"}
