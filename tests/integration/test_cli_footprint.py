"""No CLI leaves a file in the Claude configuration directory (with a real login, the user's own).

Every CLI keeps a session record there while it runs and writes its configuration files
through pid-tagged temp files.  Fifty requests of every kind (answers, a tool call, a cut at
max_tokens, an upstream error, thinking, a client that leaves mid-stream) and one request still
running when the server stops: once the server has stopped and every CLI is gone, the
directory holds what the first request's login bookkeeping wrote, nothing more.  With CLIs
reused across requests (the defaults), and with a fresh CLI per request (two of each kind).
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.procs import cli_processes, wait_until
from tests.support.server import RunningServer, serve

BACKUPS_KEPT = 5
"""The CLI backs ``.claude.json`` up at most once a minute and keeps the last five, whoever runs
it: the set of backups changes over a long test, their number stays bounded."""

RUNS: dict[str, tuple[dict[str, Any], int]] = {
    # The defaults (a pool of one CLI per core, reused): fifty requests.
    "reused": ({"warm_pool_size": None}, 50),
    # A fresh CLI for each request, ended after it: two of each kind.
    "single-use": ({"warm_pool_size": 0}, 14),
}

THINKING = {"type": "enabled", "budget_tokens": 1024}
KINDS: list[tuple[str, str, dict[str, Any]]] = [
    ("plain", "[[say:hi]]", {}),
    ("streamed", "[[say:hi there]]", {"stream": True}),
    ("tool call", '[[tool:Bash {"command": "ls"}]]', {}),
    ("cut at max_tokens", "[[long:200]]", {"max_tokens": 20}),  # the CLI would continue: killed
    ("upstream error", "[[error:500]]", {}),
    ("thinking", "[[thinking]] hi", {"max_tokens": 3000, "thinking": THINKING}),
    ("client leaves mid-stream", "[[slow:5]] one two three four five six", {"leave": True}),
]


def config_files(config_dir: Path) -> set[str]:
    """Everything under the config directory but the CLI's own bounded backups."""
    return {str(p.relative_to(config_dir)) for p in config_dir.rglob("*")} - set(backups(config_dir))


def backups(config_dir: Path) -> list[str]:
    return [str(p.relative_to(config_dir)) for p in config_dir.glob("backups/.claude.json.backup.*")]


def client_for(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="anything", max_retries=0, timeout=120,
                               _strict_response_validation=True)


def send(client: anthropic.Anthropic, i: int) -> str:
    """Request ``i`` of the mix; returns its kind and how it ended."""
    kind, prompt, fields = KINDS[i % len(KINDS)]
    fields = dict(fields)
    stream, leave = fields.pop("stream", False), fields.pop("leave", False)
    body: dict[str, Any] = {"model": "sonnet", "max_tokens": 200,
                            "messages": [{"role": "user", "content": f"{prompt} #{i}#"}], **fields}
    try:
        if leave:
            with client.messages.stream(**body) as events:
                next(iter(events.text_stream))  # the first words, then the client is gone
            return f"{kind}: left"
        if stream:
            with client.messages.stream(**body) as events:
                return f"{kind}: {events.get_final_message().stop_reason}"
        return f"{kind}: {client.messages.create(**body).stop_reason}"
    except anthropic.APIStatusError as error:
        return f"{kind}: {error.status_code}"


def running_at_shutdown(client: anthropic.Anthropic, gate: str) -> None:
    """A streamed answer held upstream while the server stops."""
    body: dict[str, Any] = {"model": "sonnet", "max_tokens": 200,
                            "messages": [{"role": "user", "content": f"[[gate:{gate}]] one two three"}]}
    try:
        with client.messages.stream(**body) as events:
            for _ in events.text_stream:
                pass
    except Exception:  # the server went away mid-answer (the HTTP library's own error)
        pass


@pytest.mark.timeout(600)  # many CLIs: minutes on a busy two-core machine
@pytest.mark.parametrize("run", RUNS)
def test_fifty_requests_and_a_shutdown_leave_nothing_in_the_config_directory(
    run: str, cli_env: Path, upstream: FakeUpstream
) -> None:
    overrides, requests = RUNS[run]
    settings = make_settings(**overrides)
    assert wait_until(lambda: not cli_processes())
    before = config_files(cli_env)
    with serve(settings) as server:
        assert send(client_for(server), 0) == "plain: end_turn"
    assert wait_until(lambda: not cli_processes())
    bookkeeping = config_files(cli_env)  # the first CLI of a config directory sets up the login's state
    assert not [name for name in bookkeeping - before if name.startswith("sessions/") or ".tmp." in name]

    upstream.clear()
    gate = uuid.uuid4().hex
    with serve(settings) as server:
        client = client_for(server)
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda i: send(client, i), range(requests)))
        held = threading.Thread(target=running_at_shutdown, args=(client, gate))
        held.start()
        assert wait_until(lambda: upstream.held_at_gate(gate))
    upstream.open_gate(gate)
    held.join(timeout=60)
    assert wait_until(lambda: not cli_processes())

    # A call to a tool the client did not declare ends the answer one way or the other; nothing runs.
    assert set(outcomes) - {"tool call: tool_use", "tool call: end_turn"} == {
        "plain: end_turn", "streamed: end_turn", "cut at max_tokens: max_tokens", "upstream error: 502",
        "thinking: end_turn", "client leaves mid-stream: left",
    }, outcomes
    assert all(upstream.received(f"#{i}#") for i in range(requests))  # every request reached upstream
    assert config_files(cli_env) == bookkeeping, sorted(config_files(cli_env) ^ bookkeeping)
    assert len(backups(cli_env)) <= BACKUPS_KEPT
