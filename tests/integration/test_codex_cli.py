"""OpenAI's Codex CLI itself (``codex exec``) against the proxy, the real Claude Code CLI and
the fake upstream: a plain answer, a shell command Codex runs and reports back, and an
``apply_patch`` free-form tool call Codex applies.  The fake upstream scripts the model
through directives in the prompt; after a tool result it answers its default text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bodies import client_turns, texts
from tests.support.codex import codex_binary, codex_exec
from tests.support.fake_upstream import DEFAULT_TEXT, FakeUpstream
from tests.support.server import RunningServer

BINARY = codex_binary()


@pytest.fixture(autouse=True)
def _codex_is_installed() -> None:
    # Not a skip: `make test` installs it first (make test-deps), so its absence is a defect.
    assert BINARY is not None, "Codex CLI is not installed: run `make test-deps` (scripts/install-test-deps.sh)"


def system_text(body: dict[str, object]) -> str:
    system = body.get("system") or ""
    return system if isinstance(system, str) else json.dumps(system)


def test_a_plain_answer(server: RunningServer, upstream: FakeUpstream, tmp_path: Path) -> None:
    assert BINARY is not None
    run = codex_exec(BINARY, server.url, tmp_path / "home", tmp_path / "work",
                     "Greet me. [[say:Hello from Claude, through the proxy.]]")
    assert run.returncode == 0, run.stderr[-2000:]
    assert [m["text"] for m in run.items("agent_message")] == ["Hello from Claude, through the proxy."]
    assert run.events[-1]["type"] == "turn.completed"
    [call] = upstream.messages_calls
    body = call.body
    assert "opus" in body["model"]  # gpt-5.5, Codex's profile, is an alias
    assert "You are Codex" in system_text(body)  # Codex's developer instructions became the system prompt
    assert texts(body)[-1][1].endswith("Greet me. [[say:Hello from Claude, through the proxy.]]")
    tools = {tool["name"].removeprefix("mcp__client__") for tool in body["tools"]}
    assert {"exec_command", "apply_patch"} <= tools
    assert not {"web_search", "tool_search"} & tools  # hosted tools are dropped, not forwarded


def test_a_shell_call_runs_in_codex_and_its_output_goes_back(
    server: RunningServer, upstream: FakeUpstream, tmp_path: Path
) -> None:
    assert BINARY is not None
    workdir = tmp_path / "work"
    run = codex_exec(BINARY, server.url, tmp_path / "home", workdir,
                     'Make a proof file. [[thinking]] [[tool:exec_command {"cmd": "echo made-by-codex > proof.txt '
                     '&& cat proof.txt"}]]')
    assert run.returncode == 0, run.stderr[-2000:]
    assert (workdir / "proof.txt").read_text() == "made-by-codex\n"
    [command] = run.items("command_execution")
    assert command["exit_code"] == 0 and command["aggregated_output"] == "made-by-codex\n"
    assert [m["text"] for m in run.items("agent_message")] == [DEFAULT_TEXT]
    first, second = (call.body for call in upstream.messages_calls)
    assert first["thinking"]["type"] in ("enabled", "adaptive")  # Codex's reasoning effort
    turns = client_turns(second)
    assistant = next(blocks for role, blocks in turns if role == "assistant")
    # Signed thinking came back from Codex as encrypted_content and reached upstream intact.
    assert assistant[0] == {"type": "thinking", "thinking": "Let me think about this carefully.",
                            "signature": "c2lnbmF0dXJl"}
    use = next(b for b in assistant if b["type"] == "tool_use")
    assert use["name"].endswith("exec_command") and "proof.txt" in use["input"]["cmd"]
    result = next(b for role, blocks in turns if role == "user" for b in blocks if b["type"] == "tool_result")
    assert result["tool_use_id"] == use["id"] and "made-by-codex" in json.dumps(result.get("content"))


def test_an_apply_patch_call_is_applied_by_codex(server: RunningServer, upstream: FakeUpstream, tmp_path: Path) -> None:
    assert BINARY is not None
    workdir = tmp_path / "work"
    patch = "*** Begin Patch\\n*** Add File: hello.txt\\n+hello from apply_patch\\n*** End Patch\\n"
    run = codex_exec(BINARY, server.url, tmp_path / "home", workdir,
                     f'Add a file. [[tool:apply_patch {{"input": "{patch}"}}]]')
    assert run.returncode == 0, run.stderr[-2000:]
    assert (workdir / "hello.txt").read_text() == "hello from apply_patch\n"
    [change] = run.items("file_change")
    assert change["status"] == "completed" and change["changes"][0]["kind"] == "add"
    first, second = (call.body for call in upstream.messages_calls)
    tool = next(t for t in first["tools"] if t["name"].endswith("apply_patch"))
    assert tool["input_schema"]["required"] == ["input"]  # the free-form tool as one string
    turns = client_turns(second)
    use = next(b for role, blocks in turns if role == "assistant" for b in blocks if b["type"] == "tool_use")
    assert use["input"] == {"input": patch.replace("\\n", "\n")}
    result = next(b for role, blocks in turns if role == "user" for b in blocks if b["type"] == "tool_result")
    assert result["tool_use_id"] == use["id"]
