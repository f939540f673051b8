"""Hard edges (issue 13) through the real CLI and the fake upstream: big request fields that
ride to the CLI, upstream faults named right, unbounded labels, tool definitions Anthropic
would refuse, and what ``/health`` shows without a key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream, refusing_url
from tests.support.server import RunningServer, serve

ANTHROPIC = "/v1/messages"
OPENAI = "/openai/v1/chat/completions"
SURFACES = [ANTHROPIC, OPENAI]


def body_for(path: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    model = "sonnet" if path == ANTHROPIC else "gpt-4o"
    return {"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": text}], **extra}


def post(server: RunningServer, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120, **kwargs)


def error_of(path: str, response: httpx.Response) -> dict[str, Any]:
    payload = response.json()
    if path == OPENAI:
        assert set(payload) == {"error"}, payload
    else:
        assert payload["type"] == "error", payload
    return dict(payload["error"])


def spawned(server: RunningServer) -> int:
    return int(server.app.state.backend.spawned)  # type: ignore[attr-defined]


# -- item 2: request fields too big for one environment variable -----------------------------

def stops_field(path: str, stops: list[str]) -> dict[str, Any]:
    return {"stop_sequences": stops} if path == ANTHROPIC else {"stop": stops}


@pytest.mark.parametrize("path", SURFACES)
@pytest.mark.parametrize("shape", ["one 140,000-character stop", "3,000 stops of 50 characters"])
def test_big_stop_sequences_reach_upstream_and_still_stop(
    server: RunningServer, upstream: FakeUpstream, path: str, shape: str
) -> None:
    if shape.startswith("one"):
        stops = ["s" * 140_000, "HALT"]
    else:
        stops = [f"{i:04d}" + "s" * 46 for i in range(3_000)] + ["HALT"]
    response = post(server, path, body_for(path, "[[stop:HALT]]", **stops_field(path, stops)))
    assert response.status_code == 200, response.text[:300]
    assert upstream.last_body["stop_sequences"] == stops
    if path == ANTHROPIC:
        assert response.json()["stop_reason"] == "stop_sequence"
        assert response.json()["stop_sequence"] == "HALT"
    else:
        assert response.json()["choices"][0]["finish_reason"] == "stop"
        assert "HALT" not in response.json()["choices"][0]["message"]["content"]


def test_an_output_schema_too_long_for_the_cli_is_a_400_naming_the_limit(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    def schema(fields: int) -> dict[str, Any]:
        return {"type": "object", "properties": {f"f{i:05d}": {"type": "string", "description": "d" * 40}
                                                 for i in range(fields)}}

    def request(fields: int) -> dict[str, Any]:
        return body_for(OPENAI, response_format={"type": "json_schema",
                                                 "json_schema": {"name": "s", "schema": schema(fields)}})

    before = spawned(server)
    refused = post(server, OPENAI, request(3_000))
    assert refused.status_code == 400
    error = error_of(OPENAI, refused)
    assert error["param"] == "response_format.json_schema.schema"
    assert "131071 bytes" in error["message"]
    assert spawned(server) == before and not upstream.messages_calls

    # Just under the limit, it reaches the CLI and the model.
    fields = 1_400
    assert 120_000 < len(json.dumps(schema(fields))) < 131_071
    assert post(server, OPENAI, request(fields)).status_code == 200
    assert len(upstream.messages_calls) == 1


# -- item 3: upstream faults named for what they are ------------------------------------------

@pytest.mark.parametrize("path", SURFACES)
def test_an_unreachable_upstream_is_a_503_naming_it(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    url = refusing_url()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)  # the next CLI inherits it
    for stream in (False, True):
        response = post(server, path, body_for(path, stream=stream))
        assert response.status_code == 503, response.text
        error = error_of(path, response)
        assert url.removeprefix("http://") in error["message"] and "refused" in error["message"]
        assert "CLI" not in error["message"]
        if path == OPENAI:
            assert error["code"] == "upstream_unreachable"
        assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("path", SURFACES)
def test_a_garbage_stream_is_a_502_naming_the_upstream(
    server: RunningServer, upstream: FakeUpstream, path: str
) -> None:
    for stream in (False, True):
        response = post(server, path, body_for(path, "[[garbage]]", stream=stream))
        assert response.status_code == 502, response.text
        error = error_of(path, response)
        assert upstream.url.removeprefix("http://") in error["message"]
        assert "malformed" in error["message"] and "CLI" not in error["message"]
    assert len(upstream.messages_calls) == 2  # one call per request: no non-streaming fallback


@pytest.mark.parametrize("path", SURFACES)
def test_upstream_403_is_a_permission_error_with_the_upstreams_message(server: RunningServer, path: str) -> None:
    response = post(server, path, body_for(path, "[[error:403]]"))
    assert response.status_code == 403, response.text
    error = error_of(path, response)
    assert error["type"] == "permission_error"
    assert "fake upstream error 403" in error["message"]
    assert "log in" not in error["message"].lower()


@pytest.mark.parametrize(("path", "status"), [(ANTHROPIC, 529), (OPENAI, 503)])
def test_an_overloaded_upstream_tells_the_client_to_retry(
    server: RunningServer, upstream: FakeUpstream, path: str, status: int
) -> None:
    response = post(server, path, body_for(path, "[[error:529]]"))
    assert response.status_code == status
    assert error_of(path, response)["type"] == "overloaded_error"
    assert "retry" in error_of(path, response)["message"]
    assert response.headers["x-should-retry"] == "true"
    # The SDK's own default (two retries) is then honoured: three upstream calls in all.
    upstream.clear()
    ask = [{"role": "user", "content": "[[error:529]]"}]
    if path == ANTHROPIC:
        with pytest.raises(anthropic.APIStatusError):
            anthropic.Anthropic(base_url=server.url, api_key="anything").messages.create(
                model="sonnet", max_tokens=20, messages=ask)  # type: ignore[arg-type]
    else:
        with pytest.raises(openai.InternalServerError):
            openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="anything").chat.completions.create(
                model="sonnet", messages=ask)  # type: ignore[arg-type]
    assert len(upstream.messages_calls) == 3


# -- item 5: model names upstream reports are bounded -----------------------------------------

def test_a_model_name_outside_the_catalog_is_other_in_metrics_and_bounded_in_the_ledger(
    tmp_path: Path
) -> None:
    hostile = "evil-" + "x" * 5_000 + "-{label=\"injected\"}"
    with serve(make_settings(usage_db=str(tmp_path / "usage.db"))) as server:
        for reported in (hostile, "claude-sonnet-5-5-20260901"):
            response = post(server, ANTHROPIC, body_for(ANTHROPIC, f"[[model:{reported}]]"))
            assert response.status_code == 200 and response.json()["model"] == reported
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        ledger = server.app.state.ledger  # type: ignore[attr-defined]
        assert ledger.flush()
        rows = [row["model_used"] for row in ledger._query("SELECT model_used FROM requests", [])]
    tokens = [line for line in metrics.splitlines() if line.startswith("claude_proxy_tokens_total{")]
    assert any('model="other"' in line for line in tokens), tokens
    assert any('model="claude-sonnet-5-5"' in line for line in tokens), tokens  # a snapshot of a listed model
    assert "evil-" not in metrics and "injected" not in metrics
    assert len(rows) == 2 and all(len(row) <= 128 for row in rows)
    assert rows[0].startswith("evil-xxx")


# -- item 6: tool definitions Anthropic would refuse ------------------------------------------

def anthropic_tool(name: str) -> dict[str, Any]:
    return {"name": name, "input_schema": {"type": "object", "properties": {}}}


def openai_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


TOOL_CASES = [
    (ANTHROPIC, {"tools": [anthropic_tool("lookup"), anthropic_tool("lookup")]}, "tools.1.name", "declared twice"),
    (ANTHROPIC, {"tools": [anthropic_tool("a.b"), anthropic_tool("a_b")]}, "tools.1.name", "'a_b'"),
    (ANTHROPIC, {"tool_choice": {"type": "tool", "name": "lookup"}}, "tool_choice", "no tools"),
    (ANTHROPIC, {"tools": [anthropic_tool("lookup")], "tool_choice": {"type": "tool", "name": "other"}},
     "tool_choice", "not among the tools"),
    (OPENAI, {"tools": [openai_tool("lookup"), openai_tool("lookup")]}, "tools.1.function.name", "declared twice"),
    (OPENAI, {"tools": [openai_tool("lookup")], "functions": [{"name": "lookup"}]}, "functions.0.name",
     "declared twice"),
    (OPENAI, {"tool_choice": {"type": "function", "function": {"name": "lookup"}}}, "tool_choice", "no tools"),
    (OPENAI, {"tool_choice": "required"}, "tool_choice", "no tools"),
]


@pytest.mark.parametrize(("path", "fields", "param", "says"), TOOL_CASES)
def test_tool_definitions_anthropic_would_refuse_are_a_400(
    server: RunningServer, upstream: FakeUpstream, path: str, fields: dict[str, Any], param: str, says: str
) -> None:
    before = spawned(server)
    response = post(server, path, body_for(path, **fields))
    assert response.status_code == 400, response.text
    error = error_of(path, response)
    assert error["type"] == "invalid_request_error" and says in error["message"]
    if path == OPENAI:
        assert error["param"] == param
    assert spawned(server) == before and not upstream.messages_calls


@pytest.mark.parametrize("path", SURFACES)
def test_a_choice_that_forces_nothing_without_tools_is_still_accepted(
    server: RunningServer, upstream: FakeUpstream, path: str
) -> None:
    choice: Any = {"type": "none"} if path == ANTHROPIC else "none"
    response = post(server, path, body_for(path, tool_choice=choice))
    assert response.status_code == 200, response.text
    assert upstream.last_body["tools"] == [] and "tool_choice" not in upstream.last_body


# -- item 7: /health details only for this machine or the key ---------------------------------

REMOTE = {"x-forwarded-for": "203.0.113.9"}  # as a reverse proxy on loopback reports a remote caller


def test_health_shows_the_cli_path_only_on_loopback_or_with_the_key(server: RunningServer) -> None:
    local = httpx.get(f"{server.url}/health", timeout=60).json()
    assert local["status"] == "ok" and local["cli"]["path"] and local["cli"]["version"]
    remote = httpx.get(f"{server.url}/health", headers=REMOTE, timeout=60)
    assert remote.status_code == 200 and remote.json() == {"status": "ok", "version": local["version"]}
    assert local["cli"]["path"] not in remote.text

    with serve(make_settings(api_key="health-secret")) as keyed:
        url = f"{keyed.url}/health"
        assert set(httpx.get(url, headers=REMOTE, timeout=60).json()) == {"status", "version"}
        wrong = httpx.get(url, headers={**REMOTE, "x-api-key": "wrong"}, timeout=60)
        assert wrong.status_code == 200 and set(wrong.json()) == {"status", "version"}
        right = httpx.get(url, headers={**REMOTE, "authorization": "Bearer health-secret"}, timeout=60).json()
        assert right["cli"]["path"] == local["cli"]["path"] and "rate_limit" in right
