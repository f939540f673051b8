"""A reused CLI sends upstream exactly what a fresh CLI sends, and reports each request's own cost.

Two proxies share the fake upstream: one reuses its CLIs (reset by a rewind between
requests), one starts a fresh CLI for every request.  Each request of the matrix goes to
both; the two upstream bodies must be equal apart from the session id (one CLI's requests
share it) and the private working directory's path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.procs import cli_processes, wait_until
from tests.support.server import RunningServer, serve

ANTHROPIC = "/v1/messages"
OPENAI = "/openai/v1/chat/completions"


@pytest.fixture(scope="module")
def pair(cli_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer]]:
    ledgers = tmp_path_factory.mktemp("ledgers")
    reuse = make_settings(warm_pool_size=2, warm_pool_keys=8, usage_db=str(ledgers / "reuse.db"))
    fresh = make_settings(warm_pool_size=0, usage_db=str(ledgers / "fresh.db"))
    with serve(reuse) as reusing, serve(fresh) as single:
        yield reusing, single


def normalized(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True)
    text = re.sub(r'\\"session_id\\":\\"[0-9a-f-]+\\"', '\\"session_id\\":\\"S\\"', text)
    return re.sub(r"claude-proxy-[A-Za-z0-9_]+", "claude-proxy-X", text)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def history(turns: int, last: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        messages += [user(f"question {i}"), {"role": "assistant", "content": f"answer {i}"}]
    return [*messages, user(last)]


def anthropic(messages: list[dict[str, Any]], **fields: Any) -> tuple[str, dict[str, Any]]:
    return ANTHROPIC, {"model": "claude-sonnet-4-5", "max_tokens": 200, "messages": messages, **fields}


def openai(messages: list[dict[str, Any]], **fields: Any) -> tuple[str, dict[str, Any]]:
    return OPENAI, {"model": "gpt-4o", "messages": messages, **fields}


WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}

# Each configuration comes at least twice in a row, so its later requests meet a reused CLI.
MATRIX: list[tuple[str, tuple[str, dict[str, Any]]]] = [
    ("plain 1", anthropic([user("hello [[echo]]")])),
    ("plain 2", anthropic([user("again [[echo]]")])),
    ("plain 3", anthropic([user("third [[say:three]]")])),
    ("rate limited", anthropic([user("busy [[error:429]]")])),
    ("after a 429", anthropic([user("calm [[echo]]")])),
    ("system 3 turns", anthropic(history(3, "go on [[echo]]"), system="Be brief.")),
    ("system 7 turns", anthropic(history(7, "more [[echo]]"), system="Be brief.")),
    ("system 1 turn", anthropic(history(1, "less [[echo]]"), system="Be brief.")),
    ("stops a", anthropic([user("stop here [[stop:WORD]]")], stop_sequences=["WORD"])),
    ("stops b", anthropic([user("stop again [[stop:WORD]]")], stop_sequences=["WORD"])),
    ("thinking a", anthropic([user("think [[thinking]]")], max_tokens=3000,
                             thinking={"type": "enabled", "budget_tokens": 1024})),
    ("thinking b", anthropic([user("think more [[thinking]]")], max_tokens=3000,
                             thinking={"type": "enabled", "budget_tokens": 1024})),
    ("tool call", anthropic([user('weather? [[tool:mcp__client__get_weather {"city": "Paris"}]]')],
                            tools=[WEATHER])),
    ("after a tool call", anthropic([user("weather? x"),
                                     {"role": "assistant", "content": [
                                         {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                          "input": {"city": "Paris"}}]},
                                     {"role": "user", "content": [
                                         {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                                         {"type": "text", "text": "[[echo]] so?"}]}], tools=[WEATHER])),
    ("max tokens", anthropic([user("long [[long:400]]")], max_tokens=20)),
    ("after max tokens", anthropic([user("short [[echo]]")], max_tokens=20)),
    ("openai 1", openai([{"role": "system", "content": "Terse."}, user("hi [[echo]]")], max_tokens=50)),
    ("openai 2", openai([{"role": "system", "content": "Terse."}, user("hey [[echo]]")], max_tokens=50)),
    ("structured 1", openai([user('json [[tool:StructuredOutput {"a": 1}]]')], max_tokens=100,
                            response_format={"type": "json_schema", "json_schema": {
                                "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}})),
    ("structured 2", openai([user('json [[tool:StructuredOutput {"a": 2}]]')], max_tokens=100,
                            response_format={"type": "json_schema", "json_schema": {
                                "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}})),
]


def send(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_a_reused_cli_sends_exactly_what_a_fresh_cli_sends(
    pair: tuple[RunningServer, RunningServer], upstream: FakeUpstream
) -> None:
    reusing, single = pair
    backend: Any = reusing.app.state.backend  # type: ignore[attr-defined]
    met_reused = []
    for name, (path, body) in MATRIX:
        bodies = []
        for server in (reusing, single):
            upstream.clear()
            before = backend.reused
            response = send(server, path, body)
            if server is reusing and backend.reused > before:
                met_reused.append(name)
            assert response.status_code in (200, 429), (name, response.text)
            calls = upstream.messages_calls
            assert len(calls) == 1, (name, "one upstream call per request")
            bodies.append(calls[0].body)
        assert normalized(bodies[0]) == normalized(bodies[1]), name
    # A CLI is reused after a clean answer, a tool call, structured output, thinking and an
    # upstream error (429); after max_tokens it is ended (it would send continuations).
    assert {"plain 2", "plain 3", "system 1 turn", "stops b", "thinking b", "after a tool call",
            "rate limited", "after a 429", "openai 2", "structured 2"} <= set(met_reused), met_reused
    assert "after max tokens" not in met_reused
    assert backend.spawned < len(MATRIX) // 2 + 4, f"{backend.spawned} CLIs for {len(MATRIX)} requests"


def test_after_a_client_disconnect_mid_stream_the_next_request_is_exact(
    pair: tuple[RunningServer, RunningServer], upstream: FakeUpstream
) -> None:
    reusing, single = pair
    path, body = anthropic([user("slowly [[slow:3]] one two three four five six")], stream=True)
    with httpx.stream("POST", f"{reusing.url}{path}", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if "content_block_delta" in line:
                break  # leave mid-answer
    path, body = anthropic([user("after leaving [[echo]]")], stream=False)
    bodies = []
    for server in (reusing, single):
        upstream.clear()
        assert send(server, path, body).status_code == 200
        bodies.append(upstream.messages_calls[-1].body)
    assert normalized(bodies[0]) == normalized(bodies[1])


def test_each_request_reports_its_own_cost(pair: tuple[RunningServer, RunningServer]) -> None:
    reusing, single = pair
    path, body = anthropic([user("cost [[echo]] " + "word " * 50)], system="Cost check.")
    for _ in range(3):
        for server in (reusing, single):
            assert send(server, path, body).status_code == 200

    def costs(server: RunningServer) -> list[float]:
        rows: list[Any] = []

        def settled() -> bool:
            nonlocal rows
            rows = httpx.get(f"{server.url}/usage", params={"recent": 3}).json()["recent"]
            return len(rows) == 3 and all(row["cost_usd"] is not None for row in rows)

        assert wait_until(settled, timeout=10), [(r["cost_usd"], r["status"], r["error_kind"]) for r in rows]
        return [row["cost_usd"] for row in rows]

    reused, fresh = costs(reusing), costs(single)
    assert reused == pytest.approx(fresh), (reused, fresh)  # never the CLI's running total
    assert fresh[0] > 0 and fresh == pytest.approx([fresh[0]] * 3)


def test_single_use_mode_stays_available(cli_env: Path) -> None:
    with serve(make_settings(warm_pool_size=2, cli_reuse=False)) as server:
        backend: Any = server.app.state.backend  # type: ignore[attr-defined]
        path, body = anthropic([user("once [[echo]]")])
        for _ in range(3):
            assert send(server, path, body).status_code == 200
            assert wait_until(lambda: backend.pool.ready_count == 1, timeout=30)  # a fresh pre-start
        assert backend.reused == 0 and backend.warm_starts == 2  # fresh pre-started CLIs, never reused


def test_shutdown_reaps_every_reused_cli(cli_env: Path) -> None:
    before = set(cli_processes())  # other tests' servers may still hold CLIs
    with serve(make_settings(warm_pool_size=2)) as server:
        backend: Any = server.app.state.backend  # type: ignore[attr-defined]
        path, body = anthropic([user("keep [[echo]]")])
        assert send(server, path, body).status_code == 200
        # Reset and returned to the pool a few milliseconds after the answer.
        assert wait_until(lambda: backend.pool.ready_count == 1, timeout=30)
        assert send(server, path, body).status_code == 200
        assert backend.reused == 1 and backend.spawned == 1
        assert wait_until(lambda: backend.pool.ready_count == 1, timeout=30)
        ours = set(cli_processes()) - before
        assert ours, "a reused CLI waits in the pool"
    assert wait_until(lambda: not (set(cli_processes()) & ours), timeout=10)


def test_an_idle_reused_cli_expires(cli_env: Path) -> None:
    before = set(cli_processes())  # other tests' servers may still hold CLIs
    with serve(make_settings(warm_pool_size=1, warm_pool_idle=1.0)) as server:
        backend: Any = server.app.state.backend  # type: ignore[attr-defined]
        path, body = anthropic([user("idle [[echo]]")])
        assert send(server, path, body).status_code == 200
        # Back in the pool after its reset (not a pre-started one), then gone once idle.
        assert wait_until(lambda: backend.pool.returned == 1)
        assert wait_until(lambda: backend.pool.ready_count == 0 and not (set(cli_processes()) - before))
        assert backend.pool.started == 0
        assert backend.reused == 0 and backend.spawned == 1
