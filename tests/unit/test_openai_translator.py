"""The OpenAI translator as plain data in, plain data out (no server, no CLI)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from claude_code_proxy.chat.answer import Answer
from claude_code_proxy.chat.request import ChatRequest, ClientTool
from claude_code_proxy.exceptions import InvalidRequestError
from claude_code_proxy.surfaces.openai_chat.models import ChatCompletionRequest
from claude_code_proxy.surfaces.openai_chat.translate import from_openai, to_chat_completion
from claude_code_proxy.web.body import parse

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
HI = {"role": "user", "content": "hi"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}}


def translate(body: dict[str, Any], default_max_tokens: int = 4096) -> ChatRequest:
    request = parse(ChatCompletionRequest, {"model": "gpt-4o", **body})
    return from_openai(request, "sonnet", default_max_tokens)


def refused(body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        translate(body)
    return info.value


# -- request: golden cases (request body -> upstream messages) -------------------------------

MESSAGE_CASES: list[tuple[str, list[dict[str, Any]], str | None, list[dict[str, Any]]]] = [
    ("plain", [HI], None, [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    (
        "system and developer are hoisted and joined, wherever they stand",
        [{"role": "system", "content": "A"}, HI, {"role": "assistant", "content": "ok"},
         {"role": "developer", "content": [{"type": "text", "text": "B"}]}, {"role": "system", "content": " "},
         {"role": "user", "content": "again"}],
        "A\nB",
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
         {"role": "user", "content": [{"type": "text", "text": "again"}]}],
    ),
    (
        "consecutive users merge; empty text is dropped; audio and file parts are dropped",
        [{"role": "user", "content": ""},
         {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "a"},
                                      {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
                                      {"type": "file", "file": {"file_id": "f"}}]},
         {"role": "user", "content": "b", "name": "bob"}],
        None,
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    ),
    (
        "images: data URL to base64, https URL to a url source; detail is ignored",
        [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/PNG;base64,{PNG}", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.webp"}}]}],
        None,
        [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.webp"}}]}],
    ),
    (
        "tool calls and results: ids sanitised alike, results lead one user turn, text after",
        [HI,
         {"role": "assistant", "content": "Checking.", "tool_calls": [
             {"id": "call.1:a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"P"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "ping", "arguments": ""}}]},
         {"role": "tool", "tool_call_id": "call.1:a", "content": "sunny"},
         {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "pong"}]},
         {"role": "user", "content": "thanks"}],
        None,
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
         {"role": "assistant", "content": [
             {"type": "text", "text": "Checking."},
             {"type": "tool_use", "id": "call_1_a", "name": "get_weather", "input": {"city": "P"}},
             {"type": "tool_use", "id": "call_2", "name": "ping", "input": {}}]},
         {"role": "user", "content": [
             {"type": "tool_result", "tool_use_id": "call_1_a", "content": "sunny"},
             {"type": "tool_result", "tool_use_id": "call_2", "content": "pong"},
             {"type": "text", "text": "thanks"}]}],
    ),
    (
        "legacy function_call and function messages",
        [HI,
         {"role": "assistant", "content": None, "function_call": {"name": "ping", "arguments": "{}"}},
         {"role": "function", "name": "ping", "content": ""}],
        None,
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "call_ping_1", "name": "ping", "input": {}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_ping_1"}]}],
    ),
    (
        "a trailing assistant prefill is dropped; refusal parts are dropped",
        [HI, {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"},
                                               {"type": "text", "text": "Sure "}]}],
        None,
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    ),
]


@pytest.mark.parametrize(("messages", "system", "expected"), [c[1:] for c in MESSAGE_CASES],
                         ids=[c[0] for c in MESSAGE_CASES])
def test_messages(messages: list[dict[str, Any]], system: str | None, expected: list[dict[str, Any]]) -> None:
    chat = translate({"messages": messages})
    assert chat.system == system
    assert chat.messages == expected


def test_defaults() -> None:
    chat = translate({"messages": [HI]}, default_max_tokens=321)
    assert chat == ChatRequest(model="sonnet", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                               max_tokens=321)


@pytest.mark.parametrize(("fields", "max_tokens"), [
    ({"max_completion_tokens": 10, "max_tokens": 20}, 10),
    ({"max_tokens": 20}, 20),
    ({}, 4096),
])
def test_max_tokens_precedence(fields: dict[str, Any], max_tokens: int) -> None:
    assert translate({"messages": [HI], **fields}).max_tokens == max_tokens


@pytest.mark.parametrize(("fields", "max_tokens", "thinking"), [
    ({"reasoning_effort": "none"}, 4096, None),
    ({"reasoning_effort": "minimal"}, 4096 + 1024, {"type": "enabled", "budget_tokens": 1024}),
    ({"reasoning_effort": "low"}, 4096 + 1024, {"type": "enabled", "budget_tokens": 1024}),
    ({"reasoning_effort": "medium"}, 4096 + 2048, {"type": "enabled", "budget_tokens": 2048}),
    ({"reasoning_effort": "high"}, 4096 + 4096, {"type": "enabled", "budget_tokens": 4096}),
    ({"reasoning_effort": "xhigh"}, 4096 + 8192, {"type": "enabled", "budget_tokens": 8192}),
    ({"reasoning_effort": "max"}, 4096 + 16384, {"type": "enabled", "budget_tokens": 16384}),
    # An explicit max_tokens is kept; the budget shrinks below it, or thinking goes.
    ({"reasoning_effort": "high", "max_tokens": 3000}, 3000, {"type": "enabled", "budget_tokens": 2999}),
    ({"reasoning_effort": "high", "max_completion_tokens": 9000}, 9000, {"type": "enabled", "budget_tokens": 4096}),
    ({"reasoning_effort": "low", "max_tokens": 1024}, 1024, None),
    # Anthropic's own form, as its OpenAI layer takes it through extra_body.
    ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, 6096, {"type": "enabled", "budget_tokens": 2000}),
    ({"thinking": {"type": "adaptive"}}, 4096, {"type": "adaptive"}),
    ({"thinking": {"type": "disabled"}, "reasoning_effort": "high"}, 4096, None),
])
def test_thinking(fields: dict[str, Any], max_tokens: int, thinking: dict[str, Any] | None) -> None:
    chat = translate({"messages": [HI], **fields})
    assert (chat.max_tokens, chat.thinking) == (max_tokens, thinking)


def test_thinking_is_dropped_when_it_cannot_be_honoured() -> None:
    forced = translate({"messages": [HI], "reasoning_effort": "high", "tools": [WEATHER], "tool_choice": "required"})
    assert forced.thinking is None
    replay = translate({"reasoning_effort": "high", "messages": [
        HI, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "sunny"}]})
    assert replay.thinking is None
    auto = translate({"messages": [HI], "reasoning_effort": "high", "tools": [WEATHER], "tool_choice": "auto"})
    assert auto.thinking == {"type": "enabled", "budget_tokens": 4096}


def test_explicit_thinking_budget_must_fit() -> None:
    error = refused({"messages": [HI], "max_tokens": 1500, "thinking": {"type": "enabled", "budget_tokens": 2000}})
    assert error.param == "thinking.budget_tokens"


@pytest.mark.parametrize(("stop", "expected"), [
    ("END", ["END"]), (["a", "\n", " ", "", "b"], ["a", "b"]), (["\n"], []), (None, []),
])
def test_stop(stop: Any, expected: list[str]) -> None:
    assert translate({"messages": [HI], "stop": stop}).stop_sequences == expected


def test_ignored_fields_change_nothing() -> None:
    ignored = {"temperature": 1.7, "top_p": 0.2, "presence_penalty": 1, "frequency_penalty": -1,
               "logit_bias": {"1": 5}, "seed": 3, "logprobs": True, "top_logprobs": 4, "user": "u",
               "metadata": {"a": "b"}, "store": True, "service_tier": "flex", "n": 1, "modalities": ["text"],
               "audio": {"voice": "x"}, "prediction": {"type": "content", "content": "x"},
               "stream_options": {"include_usage": True}, "a_future_field": {"x": [1]}}
    assert translate({"messages": [HI], **ignored}) == translate({"messages": [HI]})


# -- request: tools ----------------------------------------------------------------------------

def test_tools_become_client_tools() -> None:
    chat = translate({"messages": [HI], "tools": [WEATHER, {"type": "function", "function": {"name": "ping"}}],
                      "functions": [{"name": "legacy", "description": "old", "parameters": {"type": "object"}}]})
    assert chat.tools == [
        ClientTool("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}}),
        ClientTool("ping", "", {"type": "object", "properties": {}}),
        ClientTool("legacy", "old", {"type": "object"}),
    ]


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, None),
    ({"tool_choice": "auto"}, {"type": "auto"}),
    ({"tool_choice": "none"}, {"type": "none"}),
    ({"tool_choice": "required"}, {"type": "any"}),
    ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     {"type": "tool", "name": "get_weather"}),
    ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
    ({"parallel_tool_calls": True}, None),
    ({"tool_choice": "required", "parallel_tool_calls": False}, {"type": "any", "disable_parallel_tool_use": True}),
    ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ({"function_call": "none"}, {"type": "none"}),
    ({"function_call": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice(fields: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert translate({"messages": [HI], "tools": [WEATHER], **fields}).tool_choice == expected


def test_tool_choice_without_tools_is_ignored() -> None:
    assert translate({"messages": [HI], "tool_choice": "none", "parallel_tool_calls": False}).tool_choice is None


@pytest.mark.parametrize(("response_format", "schema"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "object"}),
    ({"type": "json_schema", "json_schema": {"name": "a", "strict": True,
                                             "schema": {"type": "object", "properties": {"x": {"type": "integer"}}}}},
     {"type": "object", "properties": {"x": {"type": "integer"}}}),
    ({"type": "json_schema", "json_schema": {"name": "a"}}, {"type": "object"}),
])
def test_response_format(response_format: dict[str, Any], schema: dict[str, Any] | None) -> None:
    assert translate({"messages": [HI], "response_format": response_format}).output_schema == schema


# -- request: refusals -------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [HI], "n": 2}, "n"),
    ({"messages": [HI], "n": 0}, "n"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": f"data:image/bmp;base64,{PNG}"}}]}]}, "messages.0.content.0.image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64,@@"}}]}]}, "messages.0.content.0.image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "http://127.0.0.1/x.png"}}]}]}, "messages.0.content.0.image_url.url"),
    ({"messages": [HI, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}, HI]},
     "messages.1.tool_calls.0.function.arguments"),
    ({"messages": [HI, {"role": "function", "name": "nobody", "content": "x"}]}, "messages.1"),
    ({"messages": [{"role": "system", "content": "only"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "bad \x00"}]}, "messages.0.content"),
    ({"messages": [{"role": "system", "content": "bad \x00"}, HI]}, "messages.0.content"),
    ({"messages": [HI], "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice"),
])
def test_refused(body: dict[str, Any], param: str) -> None:
    assert refused(body).param == param


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [HI], "max_tokens": "5"}, "max_tokens"),
    ({"messages": [HI], "stream": "true"}, "stream"),
    ({"messages": [HI], "n": 1.0}, "n"),
    ({"messages": [HI], "reasoning_effort": "huge"}, "reasoning_effort"),
    ({"messages": [HI], "tools": [{"type": "function", "function": {"name": "has space"}}]},
     "tools.0.function.name"),
    # pydantic puts the union's tag (the role) in the path; the client sees its own field path.
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
    ({"messages": [HI], "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"messages": [HI], "response_format": {"type": "json_schema", "json_schema": {}}},
     "response_format.json_schema.name"),
    ({"messages": [HI], "tool_choice": {"type": "function"}}, "tool_choice.function"),
    ({"messages": [HI], "thinking": {"type": "enabled", "budget_tokens": 5}}, "thinking.budget_tokens"),
])
def test_invalid_shapes_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse(ChatCompletionRequest, {"model": "m", **body})
    assert info.value.param == param


# -- response ----------------------------------------------------------------------------------

def message(content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int) -> Answer:
    return Answer(id="msg_1", model="claude-x", content=content, stop_reason=stop_reason, stop_sequence=None,
                  usage={"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 0, **usage})


def test_text_completion_golden() -> None:
    completion = to_chat_completion(
        message([{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
                cache_creation_input_tokens=3, cache_read_input_tokens=7),
        model="gpt-4o", completion_id="chatcmpl-1", created=1700000000,
    )
    assert completion == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o",
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25,
                  "prompt_tokens_details": {"cached_tokens": 7}},
    }


def test_tool_call_completion_golden() -> None:
    completion = to_chat_completion(message([
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "ping", "input": {}},
    ], "tool_use"), model="m", completion_id="c", created=1)
    assert completion["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": None, "refusal": None, "reasoning_content": "hmm",
                    "tool_calls": [
                        {"id": "toolu_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                        {"id": "toolu_2", "type": "function", "function": {"name": "ping", "arguments": "{}"}}]},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


@pytest.mark.parametrize(("stop_reason", "has_tools", "finish"), [
    ("end_turn", False, "stop"), ("stop_sequence", False, "stop"), ("max_tokens", False, "length"),
    ("tool_use", True, "tool_calls"), ("end_turn", True, "tool_calls"), ("max_tokens", True, "length"),
    ("tool_use", False, "stop"), ("refusal", False, "content_filter"), ("pause_turn", False, "stop"),
    ("model_context_window_exceeded", False, "length"), (None, False, "stop"), ("something_new", False, "stop"),
])
def test_finish_reasons(stop_reason: str | None, has_tools: bool, finish: str) -> None:
    content = [{"type": "tool_use", "id": "t", "name": "f", "input": {}}] if has_tools else []
    completion = to_chat_completion(message(content, stop_reason), model="m", completion_id="c", created=1)
    assert completion["choices"][0]["finish_reason"] == finish
    assert completion["choices"][0]["message"]["content"] is None
