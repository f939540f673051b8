"""One client request, exactly one upstream request, whatever the model answers, on every
surface, streaming and not, with the cost recorded (issue 19, item 2).

The CLI would call upstream again by itself after a call to a tool the client did not
declare (answering it with an error) and after ``max_tokens`` (a continuation); one model
turn stops the first, the relay's gate the second (backend/relay.py).  Each request carries a
unique marker in its user turn, so the upstream calls made for it can be counted once the
request's ledger row (written after the CLI's turn is over) is there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.procs import wait_until
from tests.support.proxy_process import proxy_process
from tests.support.server import RunningServer, ledger_row, serve

WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
REPLIES: dict[str, tuple[str, dict[str, bool]]] = {
    "text": ("[[say:plain words]]", {}),
    "thinking": ("[[thinking]] [[say:thought about it]]", {"thinking": True}),
    "declared_tool": ('[[tool:get_weather {"city": "Paris"}]]', {"tools": True}),
    "undeclared_tool": ('[[say:Let me run it.]] [[tool:Bash {"command": "ls"}]]', {"tools": True}),
    "undeclared_tool_no_tools": ('[[say:Let me look.]] [[tool:Read {"file_path": "/etc/hosts"}]]', {}),
    "max_tokens": ("[[long:300]]", {}),
}
MODEL = "claude-sonnet-4-5"


@pytest.fixture(scope="module")
def ledger_server(cli_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a usage ledger of its own."""
    db = tmp_path_factory.mktemp("ledger") / "usage.db"
    with serve(make_settings(usage_db=str(db))) as running:
        # One answer first: a cut answer's cost is priced the way the CLI's results price
        # this model (backend/prices.py).
        assert httpx.post(f"{running.url}/v1/messages", timeout=60, json={
            "model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "[[say:ready]]"}]}
        ).status_code == 200
        yield running


Outcome = tuple[str | None, list[str]]
"""The answer's stop (in the surface's words) and its content kinds (``text``, ``tool:NAME``)."""


def run_anthropic(url: str, text: str, options: dict[str, bool], stream: bool, request_id: str) -> Outcome:
    client = anthropic.Anthropic(base_url=url, api_key="anything", max_retries=0, _strict_response_validation=True,
                                 default_headers={"x-request-id": request_id})
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 60, "messages": [{"role": "user", "content": text}]}
    if options.get("tools"):
        kwargs["tools"] = [WEATHER]
    if options.get("thinking"):
        kwargs.update(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024})
    if stream:
        with client.messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    kinds = [f"tool:{b.name}" if b.type == "tool_use" else b.type for b in message.content if b.type != "thinking"]
    return message.stop_reason, kinds


def run_openai(url: str, text: str, options: dict[str, bool], stream: bool, request_id: str) -> Outcome:
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="anything", max_retries=0,
                           _strict_response_validation=True, default_headers={"x-request-id": request_id})
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 60, "messages": [{"role": "user", "content": text}]}
    if options.get("tools"):
        kwargs["tools"] = [{"type": "function", "function": {"name": WEATHER["name"],
                                                             "parameters": WEATHER["input_schema"]}}]
    if options.get("thinking"):
        kwargs.update(max_tokens=2000, reasoning_effort="low")
    if not stream:
        choice = client.chat.completions.create(**kwargs).choices[0]
        calls = [f"tool:{c.function.name}" for c in choice.message.tool_calls or [] if c.type == "function"]
        return choice.finish_reason, (["text"] if choice.message.content else []) + calls
    finish, kinds = None, []
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            if choice.delta.content and "text" not in kinds:
                kinds.append("text")
            kinds += [f"tool:{c.function.name}" for c in choice.delta.tool_calls or []
                      if c.function and c.function.name]
    return finish, kinds


def run_responses(url: str, text: str, options: dict[str, bool], stream: bool, request_id: str) -> Outcome:
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="anything", max_retries=0,
                           _strict_response_validation=True, default_headers={"x-request-id": request_id})
    kwargs: dict[str, Any] = {"model": MODEL, "max_output_tokens": 60, "input": text}
    if options.get("tools"):
        kwargs["tools"] = [{"type": "function", "name": WEATHER["name"], "parameters": WEATHER["input_schema"],
                            "strict": False}]
    if options.get("thinking"):
        kwargs.update(max_output_tokens=2000, reasoning={"effort": "low"})
    if stream:
        # The last event carries the whole response: response.completed, or response.incomplete
        # for an answer cut at its length (the SDK's get_final_response knows only the first).
        with client.responses.stream(**kwargs) as events:
            last = list(events)[-1]
        assert last.type in ("response.completed", "response.incomplete"), last.type
        response = last.response
    else:
        response = client.responses.create(**kwargs)
    kinds = [f"tool:{item.name}" if item.type == "function_call" else "text"
             for item in response.output if item.type in ("function_call", "message")]
    stop: str | None = response.status if response.incomplete_details is None else response.incomplete_details.reason
    if stop == "completed" and any(kind.startswith("tool:") for kind in kinds):
        stop = "tool_calls"
    return stop, kinds


def run_ollama(url: str, text: str, options: dict[str, bool], stream: bool, request_id: str) -> Outcome:
    client = ollama.Client(host=url, headers={"x-request-id": request_id})
    kwargs: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": text}],
                              "options": {"num_predict": 60}}
    if options.get("tools"):
        kwargs["tools"] = [{"type": "function", "function": {"name": WEATHER["name"], "description": "Weather.",
                                                             "parameters": WEATHER["input_schema"]}}]
    if options.get("thinking"):
        kwargs.update(think=True, options={"num_predict": 2000})
    parts: list[ollama.ChatResponse] = list(client.chat(**kwargs, stream=True)) if stream else [client.chat(**kwargs)]
    kinds: list[str] = []
    for part in parts:
        if part.message.content and "text" not in kinds:
            kinds.append("text")
        kinds += [f"tool:{call.function.name}" for call in part.message.tool_calls or []]
    done_reason = parts[-1].done_reason
    if done_reason == "stop" and any(kind.startswith("tool:") for kind in kinds):
        done_reason = "tool_calls"
    return done_reason, kinds


RUNS = {"anthropic": run_anthropic, "openai_chat": run_openai, "responses": run_responses, "ollama": run_ollama}
# What each surface says for: a finished answer, a tool call, an answer cut at its length.
STOPS = {
    "anthropic": ("end_turn", "tool_use", "max_tokens"),
    "openai_chat": ("stop", "tool_calls", "length"),
    "responses": ("completed", "tool_calls", "max_output_tokens"),
    "ollama": ("stop", "tool_calls", "length"),
}


def calls_for(upstream: FakeUpstream, marker: str) -> list[dict[str, Any]]:
    return [call.body for call in upstream.messages_calls if marker in json.dumps(call.body["messages"][:1])]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("surface", list(RUNS))
@pytest.mark.parametrize("reply", list(REPLIES))
def test_one_upstream_call_per_request_whatever_the_answer(
    ledger_server: RunningServer, upstream: FakeUpstream, reply: str, surface: str, stream: bool
) -> None:
    text, options = REPLIES[reply]
    marker = f"m{uuid.uuid4().hex[:10]}"
    request_id = f"{reply}-{surface}-{stream}-{marker}"
    stop, kinds = RUNS[surface](ledger_server.url, f"{marker} {text}", options, stream, request_id)

    done, tool_call, cut = STOPS[surface]
    expected = {
        "text": (done, ["text"]),
        "thinking": (done, ["text"]),
        "declared_tool": (tool_call, ["tool:get_weather"]),
        # The call nobody declared is left out; the text before it stays; the answer ends.
        "undeclared_tool": (done, ["text"]),
        "undeclared_tool_no_tools": (done, ["text"]),
        "max_tokens": (cut, ["text"]),
    }[reply]
    assert (stop, kinds) == expected

    # The cost is recorded: read from the CLI's result (or, for an answer cut at its
    # length, priced the way the CLI prices this model).
    row = ledger_row(ledger_server, request_id)
    assert row["status"] == 200 and row["cost_usd"] is not None and row["cost_usd"] > 0, row
    # The row is written once the CLI's turn is over (its result read): a call it made by
    # itself (a reply to the undeclared call...) came before.  A cut answer's CLI was killed
    # instead, at the answer's end: a sentinel on the same server gives a continuation it
    # sent just before the kill time to arrive.
    if reply == "max_tokens":
        sentinel = f"s{uuid.uuid4().hex[:10]}"
        assert httpx.post(f"{ledger_server.url}/v1/messages", timeout=60, json={
            "model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": f"{sentinel} [[say:ok]]"}]}
        ).status_code == 200
        assert len(calls_for(upstream, sentinel)) == 1
    bodies = calls_for(upstream, marker)
    # The one call asked for what the client asked: the client's turn is the last one.  (A
    # continuation the CLI starts after a cut answer, before its kill, is refused by the
    # relay's gate and never arrives: tests/integration/test_relay.py shows it with the CLI.)
    assert marker in json.dumps(bodies[0]["messages"][-1])
    assert len(bodies) == 1, [body["messages"][-1] for body in bodies]


@pytest.mark.parametrize("status", [400, 529])
def test_an_upstream_error_is_one_call(ledger_server: RunningServer, upstream: FakeUpstream, status: int) -> None:
    marker = f"m{uuid.uuid4().hex[:10]}"
    client = anthropic.Anthropic(base_url=ledger_server.url, api_key="anything", max_retries=0,
                                 _strict_response_validation=True)
    with pytest.raises(anthropic.APIStatusError) as failed:
        client.messages.create(model=MODEL, max_tokens=20,
                               messages=[{"role": "user", "content": f"{marker} [[error:{status}]]"}])
    assert failed.value.status_code == status
    sentinel = f"s{uuid.uuid4().hex[:10]}"
    assert httpx.post(f"{ledger_server.url}/v1/messages", timeout=60, json={
        "model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": f"{sentinel} [[say:ok]]"}]}
    ).status_code == 200
    assert len(calls_for(upstream, marker)) == 1


def test_a_call_for_an_undeclared_tool_is_logged_and_not_shown(tmp_path: Path, upstream: FakeUpstream) -> None:
    env: dict[str, str | None] = {"CLAUDE_PROXY_LOG_FORMAT": "json", "CLAUDE_PROXY_LOG_LEVEL": "INFO"}
    marker = f"m{uuid.uuid4().hex[:10]}"
    with proxy_process(tmp_path, env=env) as proxy:
        reply = httpx.post(f"{proxy.url}/v1/messages", timeout=60, json={
            "model": MODEL, "max_tokens": 50, "messages": [
                {"role": "user", "content": f'{marker} [[say:Checking.]] [[tool:Bash {{"command": "rm -rf /"}}]]'}]})
        assert reply.status_code == 200, reply.text
        assert [block["type"] for block in reply.json()["content"]] == ["text"]
        assert reply.json()["stop_reason"] == "end_turn"

        def logged() -> list[dict[str, Any]]:
            lines = [json.loads(line) for line in proxy.logs().splitlines() if line.startswith("{")]
            return [line for line in lines if line.get("event") == "backend.undeclared_tool_call"]

        assert wait_until(lambda: bool(logged())), proxy.logs()[-2000:]
        assert logged()[0]["tool"] == "Bash"
        assert "rm -rf" not in proxy.logs()  # the model's arguments are not logged
    assert len(calls_for(upstream, marker)) == 1
