"""The OpenAI stream encoder: recorded upstream events in, exact chunks out."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from claude_code_proxy.chat.answer import Completion
from claude_code_proxy.exceptions import OverloadedError, RateLimitError
from claude_code_proxy.exchange import frames as exchange_frames
from claude_code_proxy.surfaces.openai_chat.encode import OpenAIStreamEncoder

USAGE = {"input_tokens": 20, "output_tokens": 9, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 3}
HEAD = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o",
        "system_fingerprint": None}


def start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


MESSAGE_START = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                      "model": "claude-x", "content": [], "usage": USAGE}}
TEXT_EVENTS = [
    MESSAGE_START,
    {"type": "ping"},
    start(0, {"type": "text", "text": ""}),
    delta(0, type="text_delta", text="Hel"),
    delta(0, type="text_delta", text="lo"),
    stop(0),
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
]
TOOL_EVENTS = [
    MESSAGE_START,
    start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, type="thinking_delta", thinking="Hmm."),
    delta(0, type="signature_delta", signature="c2ln"),
    stop(0),
    start(1, {"type": "text", "text": ""}),
    delta(1, type="text_delta", text="Let me check."),
    stop(1),
    start(2, {"type": "tool_use", "id": "toolu_a", "name": "mcp__client__get_weather", "input": {}}),
    delta(2, type="input_json_delta", partial_json=""),
    delta(2, type="input_json_delta", partial_json='{"city": "Pa'),
    delta(2, type="input_json_delta", partial_json='ris"}'),
    stop(2),
    start(3, {"type": "tool_use", "id": "toolu_b", "name": "mcp__client__ping", "input": {}}),
    stop(3),
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
]


def decode(frames: list[bytes]) -> list[Any]:
    """SSE ``data:`` frames back into their payloads (``[DONE]`` stays a string)."""
    payloads = []
    for frame in frames:
        text = frame.decode()
        assert text.startswith("data: ") and text.endswith("\n\n") and text.count("\n") == 2
        data = text[len("data: "):-2]
        payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


def encode(events: list[dict[str, Any]], completion: Completion, *, include_usage: bool = False,
           tool_names: dict[str, str] | None = None) -> list[dict[str, Any]]:
    encoder = OpenAIStreamEncoder("gpt-4o", include_usage, tool_names, completion_id="chatcmpl-x", created=1700000000)
    frames = [frame for event in events for frame in encoder.feed(event)]
    frames += encoder.finish(completion)
    assert encoder.finished
    chunks = decode(frames)
    assert chunks[-1] == "[DONE]" and "[DONE]" not in chunks[:-1]
    return chunks[:-1]


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def test_text_stream_golden() -> None:
    chunks = encode(TEXT_EVENTS, Completion("end_turn", None, USAGE), include_usage=True)
    assert chunks == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        {**HEAD, "choices": [], "usage": {"prompt_tokens": 28, "completion_tokens": 9, "total_tokens": 37,
                                          "prompt_tokens_details": {"cached_tokens": 3}}},
    ]


def test_tool_stream_golden() -> None:
    names = {"mcp__client__get_weather": "get_weather", "mcp__client__ping": "ping"}
    chunks = encode(TOOL_EVENTS, Completion("tool_use", None, USAGE), tool_names=names)
    assert chunks == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Hmm."}),
        chunk({"content": "Let me check."}),
        chunk({"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function",
                               "function": {"name": "ping", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
    ]


def test_every_chunk_passes_the_sdk_and_its_stream_helper() -> None:
    names = {"mcp__client__get_weather": "get_weather", "mcp__client__ping": "ping"}
    chunks = encode(TOOL_EVENTS, Completion("tool_use", None, USAGE), include_usage=True, tool_names=names)
    state = ChatCompletionStreamState()
    for raw in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(raw))  # strict: validate, not construct
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.role == "assistant" and message.content == "Let me check."
    calls = message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_a", "get_weather", {"city": "Paris"}), ("toolu_b", "ping", {})]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.prompt_tokens == 28


def test_finish_reason_comes_from_the_completion_once() -> None:
    chunks = encode(TEXT_EVENTS, Completion("max_tokens", None, USAGE))
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert finishes == ["length"] and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in chunks)


def test_role_once_even_without_message_start() -> None:
    chunks = encode([], Completion("end_turn", None, USAGE))
    assert chunks == [chunk({"role": "assistant", "content": ""}), chunk({}, "stop")]


def test_non_empty_block_starts_and_unknown_events() -> None:
    events = [
        MESSAGE_START,
        start(0, {"type": "text", "text": "Hi"}),
        delta(0, type="citations_delta", citation={"x": 1}),
        delta(7, type="text_delta", text="orphan"),  # a delta for no open block
        start(1, {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}),
        delta(1, type="input_json_delta", partial_json='{"q": 1}'),
        start(2, {"type": "tool_use", "id": "toolu_c", "name": "f", "input": {"a": 1}}),  # input given at start
        stop(2),
        {"type": "some_future_event"},
    ]
    chunks = encode(events, Completion("tool_use", None, USAGE))
    assert [c["choices"][0]["delta"] for c in chunks[1:]] == [
        {"content": "Hi"},
        {"tool_calls": [{"index": 0, "id": "toolu_c", "type": "function",
                         "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {},
    ]


def test_mid_stream_errors_render_in_openai_shape() -> None:
    encoder = OpenAIStreamEncoder("m")
    assert decode(encoder.error(OverloadedError("busy"))) == [{
        "error": {"message": "busy", "type": "overloaded_error", "param": None, "code": None}}]
    assert decode(encoder.error(RateLimitError("slow down")))[0]["error"]["code"] == "rate_limit_exceeded"


async def test_an_unexpected_failure_mid_stream_says_nothing_internal() -> None:
    async def run() -> AsyncGenerator[dict[str, Any], None]:
        yield TEXT_EVENTS[0]
        raise KeyError("secret internal detail")

    frames = [frame async for frame in exchange_frames(run(), OpenAIStreamEncoder("m"))]
    payloads = decode(frames)
    assert payloads[-1] == {"error": {"message": "Internal error in the proxy.", "type": "server_error",
                                      "param": None, "code": None}}
    assert "[DONE]" not in payloads


def test_ids_are_unique_per_stream() -> None:
    first, second = OpenAIStreamEncoder("m"), OpenAIStreamEncoder("m")
    assert first.id != second.id and first.id.startswith("chatcmpl-")
