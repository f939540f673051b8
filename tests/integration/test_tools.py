"""Client tools, structured output and thinking, end to end on both surfaces: the real SDKs
(strict) -> real uvicorn -> real CLI -> the fake upstream scripted to call tools."""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PING = {"name": "ping", "description": "Ping the service.", "input_schema": {"type": "object", "properties": {}}}
OPENAI_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": WEATHER["description"], "parameters": WEATHER["input_schema"],
    "strict": True}}
OPENAI_PING = {"type": "function", "function": {"name": "ping", "description": "Ping the service."}}
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


@pytest.fixture()
def oai(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="anything", max_retries=0,
                         _strict_response_validation=True)


def upstream_tools(upstream: FakeUpstream) -> dict[str, dict[str, Any]]:
    return {tool["name"]: tool for tool in upstream.last_body["tools"]}


def client_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] != "system"]


# -- Anthropic surface ------------------------------------------------------------------

def test_anthropic_tools_reach_the_model_and_calls_come_back(
    anthropic_client: anthropic.Anthropic, upstream: FakeUpstream, server: RunningServer
) -> None:
    spawned = server.app.state.backend.spawned  # type: ignore[attr-defined]
    message = anthropic_client.messages.create(
        model="sonnet", max_tokens=200, tools=[WEATHER, PING],  # type: ignore[list-item]
        messages=[{"role": "user", "content": '[[tool:get_weather {"city": "Paris"}]]'}],
    )
    tools = upstream_tools(upstream)
    assert tools["mcp__client__get_weather"]["description"] == WEATHER["description"]
    assert tools["mcp__client__get_weather"]["input_schema"] == WEATHER["input_schema"]
    assert tools["mcp__client__ping"]["input_schema"] == {"type": "object", "properties": {}}
    assert len(upstream.messages_calls) == 1, "the call must end the run: nothing executes the tool"
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}
    assert TOOL_ID.match(block.id)
    assert server.app.state.backend.spawned == spawned + 1  # type: ignore[attr-defined]


def test_anthropic_tool_stream_shape(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.with_streaming_response.create(
        model="sonnet", max_tokens=200, stream=True, tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": '[[say:Let me check.]] [[tool:get_weather {"city": "Oslo"}]]'}],
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1]
    assert starts[1]["content_block"] == {**starts[1]["content_block"], "type": "tool_use",
                                          "name": "get_weather", "input": {}}
    partial = "".join(e["delta"]["partial_json"] for e in events
                      if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta")
    assert json.loads(partial) == {"city": "Oslo"}
    with anthropic_client.messages.stream(
        model="sonnet", max_tokens=200, tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": '[[say:Let me check.]] [[tool:get_weather {"city": "Oslo"}]]'}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "text" and final.content[0].text == "Let me check."
    assert final.content[1].type == "tool_use" and final.content[1].input == {"city": "Oslo"}


def test_anthropic_parallel_and_no_argument_calls(anthropic_client: anthropic.Anthropic) -> None:
    message = anthropic_client.messages.create(
        model="sonnet", max_tokens=200, tools=[WEATHER, PING],  # type: ignore[list-item]
        messages=[{"role": "user", "content":
                   '[[tool:get_weather {"city": "A"}]] [[tool:get_weather {"city": "B"}]] [[tool:ping {}]]'}],
    )
    calls = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert calls == [("get_weather", {"city": "A"}), ("get_weather", {"city": "B"}), ("ping", {})]


def test_tool_names_the_cli_rewrites_come_back_as_declared(anthropic_client: anthropic.Anthropic,
                                                          upstream: FakeUpstream) -> None:
    dotted = {"name": "files.read-v2", "description": "Read a file.", "input_schema": {"type": "object"}}
    message = anthropic_client.messages.create(
        model="sonnet", max_tokens=100, tools=[dotted],  # type: ignore[list-item]
        messages=[{"role": "user", "content": '[[tool:files_read-v2 {"path": "a"}]]'}],
    )
    assert "mcp__client__files_read-v2" in upstream_tools(upstream)
    assert message.content[0].type == "tool_use" and message.content[0].name == "files.read-v2"


def test_anthropic_round_trip_reaches_upstream_as_real_turns(
    anthropic_client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    message = anthropic_client.messages.create(
        model="sonnet", max_tokens=100, tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call.abc:1", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call.abc:1", "content": "sunny"},
                {"type": "text", "text": "[[say:It is sunny.]]"}]},
        ],
    )
    assert message.content[0].text == "It is sunny."  # type: ignore[union-attr]
    turns = client_turns(upstream.last_body)
    assistant = turns[-2]
    use = next(b for b in assistant["content"] if b["type"] == "tool_use")
    assert use["name"] == "mcp__client__get_weather" and use["input"] == {"city": "Rome"}
    assert TOOL_ID.match(use["id"])
    last = turns[-1]["content"]
    assert last[0]["type"] == "tool_result" and last[0]["tool_use_id"] == use["id"]
    assert len(upstream.messages_calls) == 1


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"type": "auto"}),
    ({"type": "any"}, {"type": "any"}),
    ({"type": "none"}, {"type": "none"}),
    ({"type": "tool", "name": "get_weather"}, {"type": "tool", "name": "mcp__client__get_weather"}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"type": "auto", "disable_parallel_tool_use": True}),
])
def test_anthropic_tool_choice_reaches_upstream(
    anthropic_client: anthropic.Anthropic, upstream: FakeUpstream, choice: dict[str, Any], expected: dict[str, Any]
) -> None:
    anthropic_client.messages.create(model="sonnet", max_tokens=50, tools=[WEATHER],  # type: ignore[list-item]
                                     tool_choice=choice,  # type: ignore[arg-type]
                                     messages=[{"role": "user", "content": "hi"}])
    assert upstream.last_body["tool_choice"] == expected


def test_anthropic_agent_loop_three_rounds(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Plan a trip. [[agent:get_weather:3]]"}]
    rounds = 0
    while True:
        reply = anthropic_client.messages.create(model="sonnet", max_tokens=200, tools=[WEATHER],  # type: ignore
                                                 messages=messages)  # type: ignore[arg-type]
        if reply.stop_reason != "tool_use":
            break
        rounds += 1
        call = next(b for b in reply.content if b.type == "tool_use")
        assert call.name == "get_weather" and call.input == {"round": rounds}
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": f"result {rounds}"}]})
        assert rounds <= 3
    assert rounds == 3
    assert reply.content[0].text == "Finished after 3 tool rounds."  # type: ignore[union-attr]
    results = [b for m in client_turns(upstream.last_body) if m["role"] == "user" and isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert [r["content"] for r in results] == ["result 1", "result 2", "result 3"]


# -- OpenAI surface ---------------------------------------------------------------------

def test_openai_tool_call(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o", tools=[OPENAI_WEATHER, OPENAI_PING],  # type: ignore[list-item]
        messages=[{"role": "user", "content": '[[tool:get_weather {"city": "Paris"}]]'}],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str) and json.loads(call.function.arguments) == {"city": "Paris"}
    tools = upstream_tools(upstream)
    assert tools["mcp__client__get_weather"]["input_schema"] == WEATHER["input_schema"]
    assert "strict" not in json.dumps(tools["mcp__client__get_weather"])
    assert tools["mcp__client__ping"]["input_schema"] == {"type": "object", "properties": {}}
    assert len(upstream.messages_calls) == 1


def test_openai_no_argument_call_has_empty_object_arguments(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o", tools=[OPENAI_PING],  # type: ignore[list-item]
                                             messages=[{"role": "user", "content": "[[tool:ping {}]]"}])
    assert completion.choices[0].message.tool_calls[0].function.arguments == "{}"  # type: ignore[index,union-attr]
    with oai.chat.completions.stream(model="gpt-4o", tools=[OPENAI_PING],  # type: ignore[list-item]
                                     messages=[{"role": "user", "content": "[[tool:ping {}]]"}]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == "{}"  # type: ignore[index]


def test_openai_streamed_parallel_calls_after_text(oai: openai.OpenAI) -> None:
    prompt = '[[say:Let me call tools.]] [[tool:get_weather {"city": "A"}]] [[tool:get_weather {"city": "B"}]]'
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o", stream=True, tools=[OPENAI_WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": prompt}],
    ) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    deltas = [tc for c in chunks for ch in c["choices"] for tc in (ch["delta"].get("tool_calls") or [])]
    assert all(isinstance(d["index"], int) for d in deltas)
    firsts = [d for d in deltas if "id" in d]
    assert [d["index"] for d in firsts] == [0, 1]
    assert all(d["type"] == "function" and d["function"]["name"] == "get_weather" for d in firsts)
    assert all("name" not in d.get("function", {}) and "type" not in d for d in deltas if "id" not in d)
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["tool_calls"]
    with oai.chat.completions.stream(model="gpt-4o", tools=[OPENAI_WEATHER],  # type: ignore[list-item]
                                     messages=[{"role": "user", "content": prompt}]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me call tools."
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [{"city": "A"}, {"city": "B"}]  # type: ignore
    assert message.tool_calls[0].id != message.tool_calls[1].id  # type: ignore[index]


def test_openai_legacy_functions(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o", functions=[OPENAI_WEATHER["function"]],  # type: ignore[list-item]
        messages=[{"role": "user", "content": '[[tool:get_weather {"city": "Lima"}]]'}],
    )
    assert "mcp__client__get_weather" in upstream_tools(upstream)
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("none", None, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, None,
     {"type": "tool", "name": "mcp__client__get_weather"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
])
def test_openai_tool_choice_reaches_upstream(
    oai: openai.OpenAI, upstream: FakeUpstream, choice: Any, parallel: bool | None, expected: dict[str, Any]
) -> None:
    extra: dict[str, Any] = {}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    oai.chat.completions.create(model="gpt-4o", tools=[OPENAI_WEATHER],  # type: ignore[list-item]
                                messages=[{"role": "user", "content": "hi"}], **extra)
    assert upstream.last_body["tool_choice"] == expected


def test_openai_round_trip_with_parallel_results(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    completion = oai.chat.completions.create(model="gpt-4o", tools=[OPENAI_WEATHER],  # type: ignore[list-item]
                                             messages=[
        {"role": "user", "content": "weather in A and B?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call.abc:1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"A"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"B"}'}}]},
        {"role": "tool", "tool_call_id": "call.abc:1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
        {"role": "user", "content": "[[say:Tool result received.]]"},
    ])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == "Tool result received."
    turns = client_turns(upstream.last_body)
    uses = [b for b in turns[-2]["content"] if b["type"] == "tool_use"]
    assert [u["name"] for u in uses] == ["mcp__client__get_weather"] * 2
    assert [u["input"] for u in uses] == [{"city": "A"}, {"city": "B"}]
    last = turns[-1]["content"]
    assert [b["type"] for b in last[:2]] == ["tool_result", "tool_result"]
    assert [b["tool_use_id"] for b in last[:2]] == [u["id"] for u in uses]
    assert all(TOOL_ID.match(u["id"]) for u in uses)
    assert any(b.get("type") == "text" and "Tool result received" in b.get("text", "") for b in last[2:])


def test_openai_agent_loop_three_rounds(oai: openai.OpenAI) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Plan it. [[agent:get_weather:3]]"}]
    for expected_round in (1, 2, 3):
        completion = oai.chat.completions.create(model="gpt-4o", tools=[OPENAI_WEATHER],  # type: ignore
                                                 messages=messages)  # type: ignore[arg-type]
        assert completion.choices[0].finish_reason == "tool_calls"
        call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert json.loads(call.function.arguments) == {"round": expected_round}
        messages.append(completion.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": f"result {expected_round}"})
    final = oai.chat.completions.create(model="gpt-4o", tools=[OPENAI_WEATHER],  # type: ignore[list-item]
                                        messages=messages)  # type: ignore[arg-type]
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "Finished after 3 tool rounds."


# -- structured output ------------------------------------------------------------------

class Answer(BaseModel):
    answer: str
    confidence: float


def test_openai_parse_json_schema(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    directive = '[[tool:StructuredOutput {"answer": "42", "confidence": 0.9}]]'
    completion = oai.chat.completions.parse(model="gpt-4o", response_format=Answer,
                                            messages=[{"role": "user", "content": directive}])
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert message.parsed == Answer(answer="42", confidence=0.9)
    assert message.content is not None and message.content.lstrip().startswith("{")
    schema = upstream_tools(upstream)["StructuredOutput"]["input_schema"]
    assert set(schema["properties"]) == {"answer", "confidence"}
    with oai.chat.completions.stream(model="gpt-4o", response_format=Answer,
                                     messages=[{"role": "user", "content": directive}]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Answer(answer="42", confidence=0.9)


def test_openai_json_object(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o", response_format={"type": "json_object"},
        messages=[{"role": "user", "content": '[[tool:StructuredOutput {"ok": true}]]'}],
    )
    assert json.loads(completion.choices[0].message.content or "") == {"ok": True}
    assert upstream_tools(upstream)["StructuredOutput"]["input_schema"]["type"] == "object"


def test_anthropic_thinking_history_is_accepted(anthropic_client: anthropic.Anthropic,
                                                upstream: FakeUpstream) -> None:
    first = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": '[[thinking]] [[tool:get_weather {"city": "Bern"}]]'}],
    )
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].signature  # type: ignore[union-attr]
    call = first.content[1]
    second = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": '[[thinking]] [[tool:get_weather {"city": "Bern"}]]'},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "cold"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assistant = client_turns(upstream.last_body)[-2]
    assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use"]
    assert assistant["content"][0]["signature"] == first.content[0].signature  # type: ignore[union-attr]


def test_tools_on_a_bad_schema_are_refused_without_a_cli(server: RunningServer) -> None:
    spawned = server.app.state.backend.spawned  # type: ignore[attr-defined]
    response = httpx.post(f"{server.url}/v1/messages", json={
        "model": "sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "", "input_schema": {}}]})
    assert response.status_code == 400
    assert server.app.state.backend.spawned == spawned  # type: ignore[attr-defined]
