"""The Responses surface through httpx's ASGI transport and a scripted backend.

Fast (no CLI, no sockets): the real ``openai`` SDK in strict mode parses every answer,
stream and stored response; the scripted backend records what each route handed over.
The same surface against the real CLI and the fake upstream: tests/integration.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import openai
import pytest
from structlog.testing import capture_logs

from claude_code_proxy.app import create_app
from claude_code_proxy.backend.scripted import ScriptedBackend, text_answer
from claude_code_proxy.chat.answer import BackendItem, Completion
from claude_code_proxy.chat.request import ChatRequest
from claude_code_proxy.exceptions import ClaudeProxyError, RateLimitError
from claude_code_proxy.surfaces.openai_responses.render import decode_reasoning
from tests.conftest import make_settings

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"


def answer(chat: ChatRequest, blocks: Sequence[dict[str, Any]], stop_reason: str = "end_turn",
           usage: dict[str, int] | None = None) -> list[BackendItem]:
    """The upstream events of an answer made of ``blocks`` (tool names as the client declared
    them; thinking blocks carry their signature)."""
    upstream = {tool.name: tool.upstream_name for tool in chat.tools}
    usage = usage or {"input_tokens": 20, "output_tokens": 9, "cache_creation_input_tokens": 3,
                      "cache_read_input_tokens": 5}
    items: list[BackendItem] = [{"type": "message_start", "message": {
        "id": "msg_scripted", "type": "message", "role": "assistant", "model": "claude-scripted", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}}]
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": block["text"][i:i + 5]} for i in range(0, len(block["text"]), 5)]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                      {"type": "signature_delta", "signature": block["signature"]}]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": upstream[block["name"]], "input": {}}
            raw = block.get("raw", json.dumps(block["input"]))
            deltas = [{"type": "input_json_delta", "partial_json": raw[:4]},
                      {"type": "input_json_delta", "partial_json": raw[4:]}]
        items.append({"type": "content_block_start", "index": index, "content_block": start})
        items += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        items.append({"type": "content_block_stop", "index": index})
    items += [{"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
               "usage": {"output_tokens": usage["output_tokens"]}},
              {"type": "message_stop"},
              Completion(stop_reason, None, usage, 0.0, "claude-scripted")]
    return items


def client_for(backend: ScriptedBackend, **settings: Any) -> openai.AsyncOpenAI:
    app = create_app(make_settings(**settings), backend)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    return openai.AsyncOpenAI(base_url="http://127.0.0.1/openai/v1", api_key=settings.get("api_key", "anything"),
                              http_client=http, max_retries=0, _strict_response_validation=True)


@pytest.fixture()
async def scripted() -> AsyncIterator[tuple[openai.AsyncOpenAI, ScriptedBackend]]:
    backend = ScriptedBackend()
    async with client_for(backend) as client:
        yield client, backend


def scripted_with(script: Callable[[ChatRequest], Sequence[BackendItem | BaseException]]) -> ScriptedBackend:
    return ScriptedBackend(script)


async def raw_events(client: openai.AsyncOpenAI, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event line, payload) per SSE frame, read off the wire."""
    response = await client._client.post("/openai/v1/responses", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    frames = [frame for frame in response.text.split("\n\n") if frame.strip() and not frame.startswith(":")]
    out = []
    for frame in frames:
        lines = frame.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out


# -- non-streaming -------------------------------------------------------------------

async def test_a_plain_answer_parses_strictly_and_echoes_the_request(scripted: Any) -> None:
    client, backend = scripted
    response = await client.responses.create(
        model="gpt-4o", input="hi", instructions="Be brief.", metadata={"k": "v"}, temperature=0.5,
        max_output_tokens=50)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.incomplete_details is None and response.error is None
    assert response.model == "gpt-4o"  # as the client sent it, not the alias target
    assert response.output_text == "Hello from the script."
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert response.metadata == {"k": "v"} and response.temperature == 0.5 and response.max_output_tokens == 50
    assert response.instructions == "Be brief."
    [chat] = backend.requests
    assert chat.model == "sonnet" and chat.system == "Be brief." and chat.max_tokens == 50
    assert chat.messages == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


async def test_usage_counts_cached_tokens_as_openai_does() -> None:
    backend = scripted_with(lambda chat: answer(chat, [{"type": "text", "text": "ok"}]))
    async with client_for(backend) as client:
        usage = (await client.responses.create(model="gpt-4o", input="hi")).usage
    assert usage is not None
    assert usage.input_tokens == 20 + 3 + 5 and usage.input_tokens_details.cached_tokens == 5
    assert usage.output_tokens == 9 and usage.total_tokens == 37
    assert usage.output_tokens_details.reasoning_tokens == 0


async def test_instructions_system_and_developer_messages_become_the_system_prompt_in_order(scripted: Any) -> None:
    client, backend = scripted
    await client.responses.create(model="gpt-4o", instructions="First.", input=[
        {"role": "system", "content": "Second."},
        {"role": "user", "content": [{"type": "input_text", "text": "q1"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "a1", "annotations": []}]},
        {"role": "developer", "content": [{"type": "input_text", "text": "Third."}]},
        {"role": "user", "content": "q2"},
    ])
    [chat] = backend.requests
    assert chat.system == "First.\nSecond.\nThird."
    assert [(m["role"], m["content"][0]["text"]) for m in chat.messages] == [
        ("user", "q1"), ("assistant", "a1"), ("user", "q2")]


async def test_max_output_tokens_cut_is_incomplete() -> None:
    backend = scripted_with(lambda chat: text_answer("cut short", stop_reason="max_tokens"))
    async with client_for(backend) as client:
        response = await client.responses.create(model="gpt-4o", input="hi", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"


# -- tools ---------------------------------------------------------------------------

def weather_call(chat: ChatRequest) -> list[BackendItem]:
    return answer(chat, [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
                  "tool_use")


async def test_a_function_call_and_its_result_round_trip() -> None:
    backend = scripted_with(lambda chat: weather_call(chat) if len(chat.messages) == 1 else text_answer("Sunny."))
    async with client_for(backend) as client:
        first = await client.responses.create(model="gpt-4o", input="Weather in Paris?", tools=[WEATHER])
        [call] = first.output
        assert call.type == "function_call" and call.name == "get_weather" and call.call_id == "toolu_1"
        assert json.loads(call.arguments) == {"city": "Paris"} and call.id and call.id.startswith("fc_")
        second = await client.responses.create(model="gpt-4o", tools=[WEATHER], input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"},
        ])
    assert second.output_text == "Sunny."
    tool = backend.requests[0].tools[0]
    assert (tool.name, tool.input_schema) == ("get_weather", WEATHER["parameters"])
    assert backend.requests[1].messages[1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22C and sunny"}]},
    ]


async def test_a_custom_tool_takes_one_string_and_comes_back_as_a_custom_tool_call() -> None:
    def script(chat: ChatRequest) -> list[BackendItem]:
        return answer(chat, [{"type": "tool_use", "id": "toolu_p", "name": "apply_patch", "input": {"input": PATCH}}],
                      "tool_use")

    backend = scripted_with(script)
    async with client_for(backend) as client:
        response = await client.responses.create(model="gpt-4o", input="add hello.txt", tools=[APPLY_PATCH])
        [call] = response.output
        assert call.type == "custom_tool_call" and call.name == "apply_patch" and call.input == PATCH
        await client.responses.create(model="gpt-4o", tools=[APPLY_PATCH], input=[
            {"role": "user", "content": "add hello.txt"}, call.model_dump(exclude_none=True),
            {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}])
    tool = backend.requests[0].tools[0]
    assert tool.input_schema == {"type": "object", "properties": {"input": {
        "type": "string", "description": "The tool's whole input, as plain text."}}, "required": ["input"]}
    assert backend.requests[1].messages[1]["content"][0]["input"] == {"input": PATCH}
    assert backend.requests[1].messages[2]["content"][0] == {
        "type": "tool_result", "tool_use_id": "toolu_p", "content": "Done!"}


async def test_local_shell_namespace_and_hosted_tools() -> None:
    def script(chat: ChatRequest) -> list[BackendItem]:
        return answer(chat, [
            {"type": "tool_use", "id": "toolu_s", "name": "local_shell", "input": {"command": ["ls", "-l"]}},
            {"type": "tool_use", "id": "toolu_n", "name": "agents.spawn", "input": {"task": "x"}},
        ], "tool_use")

    backend = scripted_with(script)
    tools: Any = [{"type": "local_shell"}, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]},
                  {"type": "namespace", "name": "agents", "description": "Sub-agents.", "tools": [
                      {"type": "function", "name": "spawn", "parameters": {"type": "object", "properties": {}}}]}]
    async with client_for(backend) as client:
        response = await client._client.post("/openai/v1/responses",
                                              json={"model": "gpt-4o", "input": "go", "tools": tools})
    assert response.status_code == 200, response.text
    shell, spawn = response.json()["output"]
    assert shell["type"] == "local_shell_call" and shell["call_id"] == "toolu_s"
    assert shell["action"]["command"] == ["ls", "-l"] and shell["action"]["type"] == "exec"
    assert spawn == {**spawn, "type": "function_call", "name": "spawn", "namespace": "agents"}
    assert sorted(t.name for t in backend.requests[0].tools) == ["agents.spawn", "local_shell"]


async def test_tool_choice_and_parallel_tool_calls(scripted: Any) -> None:
    client, backend = scripted
    await client.responses.create(model="gpt-4o", input="hi", tools=[WEATHER],
                                  tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False)
    await client.responses.create(model="gpt-4o", input="hi", tools=[WEATHER], tool_choice="required")
    assert backend.requests[0].tool_choice == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert backend.requests[1].tool_choice == {"type": "any"}
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model="gpt-4o", input="hi", tools=[WEATHER],
                                      tool_choice={"type": "function", "name": "nope"})
    assert bad.value.status_code == 400 and bad.value.body["param"] == "tool_choice"  # type: ignore[index]


# -- thinking ------------------------------------------------------------------------

def thinking_answer(chat: ChatRequest) -> list[BackendItem]:
    return answer(chat, [{"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"},
                         {"type": "tool_use", "id": "toolu_t", "name": "get_weather", "input": {"city": "Oslo"}}],
                  "tool_use")


async def test_signed_thinking_round_trips_through_encrypted_content() -> None:
    backend = scripted_with(lambda chat: thinking_answer(chat) if len(chat.messages) == 1 else text_answer("Cold."))
    async with client_for(backend) as client:
        first = await client.responses.create(
            model="gpt-4o", input="Weather in Oslo?", tools=[WEATHER], reasoning={"effort": "high", "summary": "auto"},
            include=["reasoning.encrypted_content"])
        reasoning, call = first.output
        assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Let me see."
        assert reasoning.encrypted_content and decode_reasoning(reasoning.encrypted_content) == {
            "type": "thinking", "thinking": "Let me see.", "signature": "c2ln"}
        await client.responses.create(model="gpt-4o", tools=[WEATHER], reasoning={"effort": "high"}, input=[
            {"role": "user", "content": "Weather in Oslo?"},
            reasoning.model_dump(exclude_none=True), call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "-5C"}])
    assert backend.requests[0].thinking == {"type": "enabled", "budget_tokens": 4096}
    replay = backend.requests[1]
    assert replay.messages[1]["content"][0] == {"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"}
    assert replay.thinking == {"type": "enabled", "budget_tokens": 4096}


async def test_a_tool_call_replayed_without_its_thinking_turns_thinking_off(scripted: Any) -> None:
    client, backend = scripted
    await client.responses.create(model="gpt-4o", tools=[WEATHER], reasoning={"effort": "low"}, input=[
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_other", "summary": [], "encrypted_content": "gAAAA-another-provider"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "x"}])
    chat = backend.requests[0]
    assert chat.thinking is None and [b["type"] for b in chat.messages[1]["content"]] == ["tool_use"]


async def test_without_include_no_encrypted_content_is_sent() -> None:
    backend = scripted_with(thinking_answer)
    async with client_for(backend) as client:
        response = await client.responses.create(model="gpt-4o", input="q", tools=[WEATHER],
                                                 reasoning={"effort": "low"})
    assert response.output[0].type == "reasoning"
    assert response.output[0].encrypted_content is None and response.output[0].summary == []


# -- streaming -----------------------------------------------------------------------

async def test_stream_events_are_ordered_numbered_and_end_with_completed(scripted: Any) -> None:
    client, _ = scripted
    events = await raw_events(client, {"model": "gpt-4o", "input": "hi"})
    names = [name for name, _ in events]
    assert all(payload["type"] == name for name, payload in events)
    assert [payload["sequence_number"] for _, payload in events] == list(range(len(events)))
    assert names[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert names[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    text = "".join(p["delta"] for n, p in events if n == "response.output_text.delta")
    assert text == "Hello from the script."
    final = events[-1][1]["response"]
    assert final["status"] == "completed" and final["output"] == [events[-2][1]["item"]]


async def test_the_sdk_stream_helper_and_function_call_events() -> None:
    backend = scripted_with(thinking_answer)
    async with client_for(backend) as client:
        async with client.responses.stream(model="gpt-4o", input="q", tools=[WEATHER],
                                           reasoning={"effort": "low", "summary": "auto"}) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds
    assert kinds.count("response.function_call_arguments.delta") == 2
    assert kinds[-1] == "response.completed"
    reasoning, call = final.output
    assert reasoning.summary[0].text == "Let me see."
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Oslo"}


async def test_streamed_and_non_streamed_answers_agree() -> None:
    backend = scripted_with(thinking_answer)
    body = {"model": "gpt-4o", "input": "q", "tools": [WEATHER], "include": ["reasoning.encrypted_content"],
            "reasoning": {"effort": "low", "summary": "auto"}}
    async with client_for(backend) as client:
        plain = (await client._client.post("/openai/v1/responses", json=body)).json()
        events = await raw_events(client, body)
    streamed = events[-1][1]["response"]
    done_items = [p["item"] for n, p in events if n == "response.output_item.done"]
    assert streamed["output"] == done_items

    def shape(response: dict[str, Any]) -> Any:
        return [{k: v for k, v in item.items() if k != "id"} for item in response["output"]]

    assert shape(streamed) == shape(plain)


async def test_a_custom_tool_call_streams_its_input_whole() -> None:
    def script(chat: ChatRequest) -> list[BackendItem]:
        return answer(chat, [{"type": "tool_use", "id": "toolu_p", "name": "apply_patch", "input": {"input": PATCH}}],
                      "tool_use")

    async with client_for(scripted_with(script)) as client:
        events = await raw_events(client, {"model": "gpt-4o", "input": "x", "tools": [APPLY_PATCH]})
    names = [n for n, _ in events]
    assert names[2:] == ["response.output_item.added", "response.custom_tool_call_input.delta",
                         "response.custom_tool_call_input.done", "response.output_item.done", "response.completed"]
    assert events[-2][1]["item"]["input"] == PATCH


async def test_a_failure_mid_stream_is_response_failed() -> None:
    backend = scripted_with(lambda chat: [*text_answer("partial")[:3], RateLimitError("Slow down.", retry_after=7)])
    async with client_for(backend) as client:
        events = await raw_events(client, {"model": "gpt-4o", "input": "hi"})
    names = [n for n, _ in events]
    assert names[-1] == "response.failed" and "response.completed" not in names
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "rate_limit_exceeded", "message": "Slow down. Please try again in 7s."}


async def test_an_upstream_rate_limit_before_the_stream_is_a_429_codex_can_back_off_from() -> None:
    backend = scripted_with(lambda chat: [RateLimitError("Rate limited by the upstream API.", retry_after=7)])
    async with client_for(backend) as client:
        for stream in (False, True):
            response = await client._client.post("/openai/v1/responses",
                                                  json={"model": "gpt-4o", "input": "hi", "stream": stream})
            assert response.status_code == 429 and response.headers["retry-after"] == "7"
            error = response.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and "try again in 7s" in error["message"]


# -- the store -----------------------------------------------------------------------

async def test_previous_response_id_continues_the_stored_conversation(scripted: Any) -> None:
    client, backend = scripted
    first = await client.responses.create(model="gpt-4o", input="My name is Ada.", instructions="Be brief.")
    await client.responses.create(model="gpt-4o", input="What is my name?", previous_response_id=first.id)
    assert [(m["role"], m["content"][0]["text"]) for m in backend.requests[1].messages] == [
        ("user", "My name is Ada."), ("assistant", "Hello from the script."), ("user", "What is my name?")]
    # instructions are not carried over, as on OpenAI
    assert backend.requests[1].system is None


async def test_stored_responses_can_be_retrieved_listed_and_deleted(scripted: Any) -> None:
    client, _ = scripted
    created = await client.responses.create(model="gpt-4o", input=[
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]}])
    fetched = await client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    page = await client.responses.input_items.list(created.id, order="asc", limit=2)
    assert [item.content[0].text for item in page.data] == ["one", "two"]  # type: ignore[union-attr]
    assert page.has_more
    everything = [item async for item in client.responses.input_items.list(created.id, order="asc", limit=1)]
    assert len(everything) == 3
    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


async def test_store_false_and_unknown_ids_are_404(scripted: Any) -> None:
    client, backend = scripted
    unstored = await client.responses.create(model="gpt-4o", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.create(model="gpt-4o", input="hi", previous_response_id="resp_nope")
    assert missing.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert len(backend.requests) == 1  # nothing ran for the unknown id


async def test_a_streamed_response_is_stored_too(scripted: Any) -> None:
    client, _ = scripted
    events = await raw_events(client, {"model": "gpt-4o", "input": "hi"})
    response_id = events[-1][1]["response"]["id"]
    assert (await client.responses.retrieve(response_id)).output_text == "Hello from the script."


async def test_stored_responses_are_scoped_by_api_key() -> None:
    one = create_app(make_settings(api_key="key-one"), ScriptedBackend())
    two = create_app(make_settings(api_key="key-two"), ScriptedBackend())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=one), base_url="http://127.0.0.1") as http:
        created = await http.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "hi"},
                                  headers={"authorization": "Bearer key-one"})
        response_id = created.json()["id"]
        mine = await http.get(f"/openai/v1/responses/{response_id}", headers={"x-api-key": "key-one"})
        assert mine.status_code == 200
    two.state.response_store = one.state.response_store  # one store, seen through another key
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=two), base_url="http://127.0.0.1") as http:
        other = await http.get(f"/openai/v1/responses/{response_id}", headers={"authorization": "Bearer key-two"})
    assert other.status_code == 404


# -- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize(("body", "param"), [
    ({"model": "gpt-4o"}, "input"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]},
     "input"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": 5}]}, "input"),
    ({"model": "gpt-4o", "input": "hi", "max_output_tokens": "5"}, "max_output_tokens"),
    ({"model": "gpt-4o", "input": "hi", "stream": "yes"}, "stream"),
    ({"model": "gpt-4o", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
     "input.0.arguments"),
    ({"model": "gpt-4o", "input": "hi", "background": True}, "background"),
    ({"model": "gpt-4o", "input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format"),
])
async def test_bad_bodies_are_400_naming_the_field_and_spawn_nothing(
    scripted: Any, body: dict[str, Any], param: str
) -> None:
    client, backend = scripted
    response = await client._client.post("/openai/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and (error["param"] or "").startswith(param), error
    assert backend.requests == []


async def test_unknown_items_and_hosted_tools_are_dropped_not_refused(scripted: Any) -> None:
    client, backend = scripted
    with capture_logs() as logs:
        response = await client._client.post("/openai/v1/responses", json={
            "model": "gpt-4o", "tools": [{"type": "computer_use_preview"}, {"type": "tool_search"}],
            "input": [{"type": "item_reference", "id": "msg_x"}, {"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    assert backend.requests[0].tools == [] and len(backend.requests[0].messages) == 1
    [said] = [entry for entry in logs if entry["event"] == "responses_not_forwarded"]
    assert said["log_level"] == "warning"  # the first time these kinds are seen
    assert said["tools"] == ["computer_use_preview", "tool_search"] and said["items"] == ["item_reference"]


async def test_too_many_input_items_is_413(scripted: Any) -> None:
    client, backend = scripted
    items = [{"role": "user", "content": "x"}] * 2001
    response = await client._client.post("/openai/v1/responses", json={"model": "gpt-4o", "input": items})
    assert response.status_code == 413 and response.json()["error"]["param"] == "input"
    assert backend.requests == []


async def test_unknown_model_is_404_before_anything_runs(scripted: Any) -> None:
    client, backend = scripted
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="not-a-model", input="hi")
    assert backend.requests == []


async def test_structured_output_uses_the_json_schema(scripted: Any) -> None:
    client, backend = scripted
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    await client.responses.create(model="gpt-4o", input="hi", text={"format": {
        "type": "json_schema", "name": "thing", "schema": schema, "strict": True}})
    await client.responses.create(model="gpt-4o", input="hi", text={"format": {"type": "json_object"}})
    assert backend.requests[0].output_schema == schema
    assert backend.requests[1].output_schema == {"type": "object"}


def test_errors_other_than_rate_limits_fail_as_server_errors() -> None:
    from claude_code_proxy.surfaces.openai_responses.errors import failure

    assert failure(ClaudeProxyError("boom")) == {"code": "server_error", "message": "boom"}
