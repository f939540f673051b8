"""The Ollama surface's pure parts: stats, image sniffing, names, and the stream encoder."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from claude_code_proxy.chat.answer import Completion
from claude_code_proxy.exceptions import InvalidRequestError
from claude_code_proxy.surfaces.ollama.encode import OllamaStreamEncoder
from claude_code_proxy.surfaces.ollama.translate import Marks, model_name, sniff_image, stats, supports_thinking

USAGE = {"input_tokens": 100, "output_tokens": 40, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 3}
FIXED = Marks(started=10.0, first_item=10.5, first_token=10.75, finished=12.0)


def test_stats_are_nanoseconds_that_add_up_and_every_prompt_token() -> None:
    figures = stats(USAGE, FIXED)
    assert figures == {
        "total_duration": 2_000_000_000,
        "load_duration": 500_000_000,
        "prompt_eval_count": 123,
        "prompt_eval_duration": 250_000_000,
        "eval_count": 40,
        "eval_duration": 1_250_000_000,
    }


def test_stats_without_a_token_put_everything_before_it() -> None:
    figures = stats(USAGE, Marks(started=1.0, first_item=1.5, first_token=None, finished=2.0))
    assert figures["load_duration"] == 500_000_000 and figures["prompt_eval_duration"] == 500_000_000
    assert figures["eval_duration"] == 0


@pytest.mark.parametrize(("raw", "media_type"), [
    (b"\x89PNG\r\n\x1a\n....", "image/png"),
    (b"\xff\xd8\xff\xdb....", "image/jpeg"),
    (b"GIF89a....", "image/gif"),
    (b"GIF87a....", "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"BM......", None),
    (b"%PDF-1.7", None),
])
def test_images_are_known_by_their_first_bytes(raw: bytes, media_type: str | None) -> None:
    assert sniff_image(base64.b64encode(raw + b"\x00" * 20).decode()) == media_type


def test_model_names_lose_their_tag() -> None:
    assert model_name("sonnet:latest") == "sonnet"
    assert model_name("claude-haiku-4-5") == "claude-haiku-4-5"
    assert model_name(" opus:4b ") == "opus"


def test_thinking_support_follows_the_model_generation() -> None:
    assert supports_thinking("claude-sonnet-4-5") and supports_thinking("claude-3-7-sonnet-latest")
    assert supports_thinking("sonnet")
    assert not supports_thinking("claude-3-5-haiku-latest")


def _events(index: int, block: dict[str, Any], *deltas: dict[str, Any], stop: bool = True) -> list[dict[str, Any]]:
    out = [{"type": "content_block_start", "index": index, "content_block": block}]
    out += [{"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas]
    return out + ([{"type": "content_block_stop", "index": index}] if stop else [])


def _encode(encoder: OllamaStreamEncoder, events: list[dict[str, Any]], completion: Completion) -> list[Any]:
    frames = [frame for event in events for frame in encoder.feed(event)] + encoder.finish(completion)
    assert all(frame.endswith(b"\n") and frame.count(b"\n") == 1 for frame in frames)
    return [json.loads(frame) for frame in frames]


def test_a_tool_call_cut_off_by_max_tokens_still_goes_out_once_with_empty_arguments() -> None:
    encoder = OllamaStreamEncoder("m", {"mcp__client__f": "f"}, clock=lambda: FIXED, stamp=lambda: "T")
    events = [
        *_events(0, {"type": "tool_use", "id": "toolu_a", "name": "mcp__client__f", "input": {}},
                 {"type": "input_json_delta", "partial_json": '{"x": 1}'}),
        *_events(1, {"type": "tool_use", "id": "toolu_b", "name": "mcp__client__f", "input": {}},
                 {"type": "input_json_delta", "partial_json": '{"x": "unfini'}, stop=False),
    ]
    lines = _encode(encoder, events, Completion("max_tokens", None, USAGE))
    calls = [call for line in lines for call in line["message"].get("tool_calls", [])]
    assert calls == [
        {"id": "toolu_a", "function": {"index": 0, "name": "f", "arguments": {"x": 1}}},
        {"id": "toolu_b", "function": {"index": 1, "name": "f", "arguments": {}}},
    ]
    assert lines[-1]["done_reason"] == "length" and lines[-1]["created_at"] == "T"
    assert encoder.finished


def test_generate_lines_carry_response_and_thinking_never_message() -> None:
    encoder = OllamaStreamEncoder("m", kind="generate", clock=lambda: FIXED, stamp=lambda: "T")
    events = [
        {"type": "message_start", "message": {"usage": USAGE}},
        {"type": "ping"},
        *_events(0, {"type": "thinking", "thinking": ""}, {"type": "thinking_delta", "thinking": "hm"},
                 {"type": "signature_delta", "signature": "sig"}),
        *_events(1, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Hi"}),
    ]
    lines = _encode(encoder, events, Completion("end_turn", None, USAGE))
    assert lines == [
        {"model": "m", "created_at": "T", "response": "", "thinking": "hm", "done": False},
        {"model": "m", "created_at": "T", "response": "Hi", "done": False},
        {"model": "m", "created_at": "T", "response": "", "done": True, "done_reason": "stop", **stats(USAGE, FIXED)},
    ]


def test_an_error_is_one_line() -> None:
    assert OllamaStreamEncoder.error(InvalidRequestError("bad")) == [b'{"error":"bad"}\n']
