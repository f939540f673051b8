"""Mid-conversation ``role: "system"`` turns, as Claude Code itself sends them on newer models,
and Claude Code run as a client of the proxy."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import make_settings
from tests.integration.test_observability import scrape, total
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer, serve


def post(server: RunningServer, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/messages", timeout=60,
                      json={"model": "sonnet", "max_tokens": 50, "messages": messages, **extra})


def test_system_turns_join_the_system_prompt_in_order(server: RunningServer, upstream: FakeUpstream) -> None:
    reply = post(server, [
        {"role": "user", "content": "hello"},
        {"role": "system", "content": "Answer in French."},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "system", "content": [], "output_config": {"effort": "low"}},  # a per-turn control: no text
        {"role": "user", "content": "and now? [[say:Toujours.]]"},
        {"role": "system", "content": [{"type": "text", "text": "# Client notes\nBe brief."}]},
    ], system="You are terse.")
    assert reply.status_code == 200, reply.text
    body = upstream.last_body
    system = "".join(block["text"] for block in body["system"])
    assert system.endswith("You are terse.\nAnswer in French.\n# Client notes\nBe brief.")
    texts = json.dumps(body["messages"])
    assert "Answer in French" not in texts and "Client notes" not in texts
    turns = [(m["role"], m["content"][-1]["text"]) for m in body["messages"] if m["role"] != "system"]
    assert turns == [("user", "hello"), ("assistant", "Bonjour !"), ("user", "and now? [[say:Toujours.]]")]


def test_a_system_turn_with_an_image_is_refused_before_any_cli(server: RunningServer) -> None:
    backend: Any = server.app.state.backend  # type: ignore[attr-defined]
    spawned = backend.spawned
    reply = post(server, [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
    ])
    assert reply.status_code == 400
    error = reply.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "messages.1.content" in error["error"]["message"] or "system turn" in error["error"]["message"]
    assert backend.spawned == spawned


def test_claude_code_as_a_client_gets_no_400(cli_env: Path, upstream: FakeUpstream, tmp_path: Path) -> None:
    settings = make_settings()
    cli = settings.resolved_cli_path()
    assert cli is not None
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "client-config").mkdir()
    with serve(settings) as own:  # counters of its own
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
        env.update(ANTHROPIC_BASE_URL=own.url, ANTHROPIC_API_KEY="anything",
                   CLAUDE_CONFIG_DIR=str(tmp_path / "client-config"), DISABLE_AUTOUPDATER="1",
                   DISABLE_TELEMETRY="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
        answers = []
        for model in ("claude-sonnet-5-5", "claude-sonnet-4-5"):
            done = subprocess.run([cli, "-p", "How are you? [[say:Fine, thanks.]]", "--model", model],
                                  env=env, cwd=project, capture_output=True, text=True, timeout=100, check=False)
            assert done.returncode == 0, done.stdout[-500:] + done.stderr[-500:]
            answers.append(done.stdout.strip())
        samples = scrape(own.url)
    assert answers == ["Fine, thanks.", "Fine, thanks."]
    assert total(samples, "claude_proxy_requests_total", route="/v1/messages", status="400") == 0
    assert total(samples, "claude_proxy_requests_total", route="/v1/messages", status="200") == 2
    assert len(upstream.messages_calls) == 2
    # On the newer model Claude Code sends its environment note as a system turn: it reached
    # the model, inside the system prompt.
    newer = upstream.messages_calls[0].body
    assert f"Primary working directory: {project}" in json.dumps(newer["system"])
