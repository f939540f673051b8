"""The Anthropic stream encoder: recorded upstream events in, exact SSE frames out."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2  # the SDK's own HTTP library: its client takes only httpx2 transports
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from claude_code_proxy.chat.answer import Completion
from claude_code_proxy.exceptions import NotLoggedInError, OverloadedError, RateLimitError
from claude_code_proxy.surfaces.anthropic.encode import AnthropicStreamEncoder

USAGE = {"input_tokens": 20, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
MESSAGE_START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
    "stop_reason": None, "stop_sequence": None, "usage": USAGE}}
MESSAGE_DELTA = {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                 "usage": {"output_tokens": 12}}
NAMES = {"mcp__client__get_weather": "get.weather"}


def start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def frame(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


def encode(events: list[dict[str, Any]], names: dict[str, str] | None = None) -> list[bytes]:
    encoder = AnthropicStreamEncoder(names)
    frames = [f for event in events for f in encoder.feed(event)]
    return frames + encoder.finish(Completion("tool_use", None, USAGE))


# Upstream numbers blocks 0, 2, 3: block 1 never started here (the CLI's own blocks are
# filtered out before the encoder), so the client's indices must close the gap.
EVENTS: list[dict[str, Any]] = [
    MESSAGE_START,
    {"type": "ping"},
    start(0, {"type": "text", "text": ""}),
    delta(0, type="text_delta", text="Checking the wéather."),
    stop(0),
    delta(1, type="text_delta", text="never started"),
    stop(1),
    start(2, {"type": "tool_use", "id": "toolu_a", "name": "mcp__client__get_weather", "input": {}}),
    {"type": "ping"},
    delta(2, type="input_json_delta", partial_json='{"city": '),
    delta(2, type="input_json_delta", partial_json='"Paris"}'),
    stop(2),
    start(3, {"type": "tool_use", "id": "toolu_b", "name": "Undeclared", "input": {"x": 1}}),
    stop(3),
    MESSAGE_DELTA,
    {"type": "some_future_event", "index": 0},
    {"type": "message_stop"},
]


def test_golden_frames() -> None:
    assert encode(EVENTS, NAMES) == [
        frame("message_start", MESSAGE_START),
        frame("content_block_start", start(0, {"type": "text", "text": ""})),
        frame("content_block_delta", delta(0, type="text_delta", text="Checking the wéather.")),
        frame("content_block_stop", stop(0)),
        # The tool's declared name comes back; its input always starts empty (deltas fill it).
        frame("content_block_start", start(1, {"type": "tool_use", "id": "toolu_a", "name": "get.weather",
                                               "input": {}})),
        frame("content_block_delta", delta(1, type="input_json_delta", partial_json='{"city": ')),
        frame("content_block_delta", delta(1, type="input_json_delta", partial_json='"Paris"}')),
        frame("content_block_stop", stop(1)),
        frame("content_block_start", start(2, {"type": "tool_use", "id": "toolu_b", "name": "Undeclared",
                                               "input": {}})),
        frame("content_block_stop", stop(2)),
        frame("message_delta", MESSAGE_DELTA),
        frame("message_stop", {"type": "message_stop"}),
    ]


def test_matching_indices_pass_the_event_unchanged() -> None:
    encoder = AnthropicStreamEncoder()
    encoder.feed(start(0, {"type": "text", "text": ""}))
    event = delta(0, type="text_delta", text="a")
    assert encoder.feed(event) == [frame("content_block_delta", event)]
    assert event == delta(0, type="text_delta", text="a")  # the upstream event is never mutated


def test_the_sdk_accumulates_the_frames_into_the_same_message() -> None:
    """The official SDK parses every frame in strict mode and builds the final message."""
    body = b"".join(encode(EVENTS, NAMES))
    transport = httpx2.MockTransport(lambda request: httpx2.Response(
        200, content=body, headers={"content-type": "text/event-stream"}))
    client = anthropic.Anthropic(api_key="x", base_url="http://127.0.0.1", max_retries=0,
                                 http_client=httpx2.Client(transport=transport), _strict_response_validation=True)
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    weather, undeclared = message.content[1], message.content[2]
    assert weather.type == "tool_use" and (weather.name, weather.input) == ("get.weather", {"city": "Paris"})
    assert undeclared.type == "tool_use" and undeclared.input == {}
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 12


def test_every_frame_is_a_valid_sdk_event() -> None:
    adapter: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    for raw in encode(EVENTS, NAMES):
        name, data = raw.decode().split("\n")[:2]
        event = adapter.validate_json(data.removeprefix("data: "))
        assert name == f"event: {event.type}"


def test_finish_adds_nothing_after_message_stop() -> None:
    assert AnthropicStreamEncoder().finish(Completion("end_turn", None, USAGE)) == []


def test_error_frames() -> None:
    assert AnthropicStreamEncoder.error(OverloadedError("busy")) == [
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n']
    [limited] = AnthropicStreamEncoder.error(RateLimitError("slow down", retry_after=3))
    assert json.loads(limited.decode().split("data: ", 1)[1]) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    [login] = AnthropicStreamEncoder.error(NotLoggedInError("Run claude /login."))
    assert json.loads(login.decode().split("data: ", 1)[1])["error"]["type"] == "api_error"
