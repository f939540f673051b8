"""The neutral answer: AnswerAccumulator, BlockMap and Completion, and the OpenAI surface's
streaming and non-streaming renders of the same events agreeing with each other."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claude_code_proxy.chat.answer import AnswerAccumulator, BlockMap, Completion, normalize_usage
from claude_code_proxy.surfaces.openai_chat.encode import OpenAIStreamEncoder
from claude_code_proxy.surfaces.openai_chat.translate import to_chat_completion

USAGE = {"input_tokens": 20, "output_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
NAMES = {"mcp__client__get_weather": "get_weather", "mcp__client__ping": "ping"}


def message_start(**message: Any) -> dict[str, Any]:
    return {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                 "model": "claude-x", "content": [], "usage": USAGE, **message}}


def start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def tool(index: int, tool_id: str, name: str = "mcp__client__get_weather", **block: Any) -> dict[str, Any]:
    return start(index, {"type": "tool_use", "id": tool_id, "name": name, "input": {}, **block})


def json_delta(index: int, text: str) -> dict[str, Any]:
    return delta(index, type="input_json_delta", partial_json=text)


def accumulate(events: list[dict[str, Any]], completion: Completion | None = None,
               names: dict[str, str] | None = None) -> Any:
    accumulator = AnswerAccumulator(NAMES if names is None else names)
    for event in events:
        accumulator.feed(event)
    return accumulator.finish(completion or Completion("end_turn", None, USAGE))


def test_every_block_kind_is_assembled() -> None:
    citation = {"type": "char_location", "cited_text": "x", "document_index": 0, "start_char_index": 0,
                "end_char_index": 1}
    answer = accumulate([
        message_start(),
        {"type": "ping"},
        start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, type="thinking_delta", thinking="Hm"),
        delta(0, type="thinking_delta", thinking="m."),
        delta(0, type="signature_delta", signature="c2"),
        delta(0, type="signature_delta", signature="ln"),
        stop(0),
        start(1, {"type": "redacted_thinking", "data": "opaque"}),
        stop(1),
        start(2, {"type": "text", "text": ""}),
        delta(2, type="text_delta", text="Hel"),
        delta(2, type="citations_delta", citation=citation),
        delta(2, type="text_delta", text="lo"),
        stop(2),
        tool(3, "toolu_a"),
        json_delta(3, ""),
        json_delta(3, '{"city": "Pa'),
        json_delta(3, 'ris"}'),
        stop(3),
        tool(4, "toolu_b", "mcp__client__ping"),
        stop(4),
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ], Completion("tool_use", None, USAGE))
    assert answer.content == [
        {"type": "thinking", "thinking": "Hmm.", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Hello", "citations": [citation]},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "ping", "input": {}},
    ]
    assert (answer.id, answer.model, answer.stop_reason, answer.usage) == ("msg_1", "claude-x", "tool_use", USAGE)
    assert answer.partial_tool_input == {}


def test_indices_close_gaps_and_orphan_events_are_ignored() -> None:
    answer = accumulate([
        message_start(),
        delta(0, type="text_delta", text="orphan"),  # no block started at 0
        stop(0),
        start(5, {"type": "text", "text": "A"}),
        delta(5, type="text_delta", text="B"),
        start(9, {"type": "text", "text": ""}),
        delta(9, type="text_delta", text="C"),
    ])
    assert answer.content == [{"type": "text", "text": "AB"}, {"type": "text", "text": "C"}]


def test_without_message_start_the_completion_names_the_model() -> None:
    answer = accumulate([], Completion("end_turn", "END", USAGE, model="claude-y"))
    assert (answer.id, answer.model, answer.content, answer.stop_sequence) == ("msg_proxy", "claude-y", [], "END")
    assert answer.usage is not USAGE


def test_a_tool_call_cut_off_mid_json_keeps_its_raw_text() -> None:
    answer = accumulate([
        message_start(),
        tool(0, "toolu_a"),
        json_delta(0, '{"city": "Pa'),
        stop(0),
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 9}},
    ], Completion("max_tokens", None, USAGE))
    assert answer.content == [{"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}]
    assert answer.partial_tool_input == {"toolu_a": '{"city": "Pa'}


def test_block_map() -> None:
    blocks = BlockMap({"mcp__client__x": "x.y"})
    assert (blocks.start(3), blocks.start(7), blocks.get(3), blocks.get(7), blocks.get(4)) == (0, 1, 0, 1, None)
    given = {"type": "tool_use", "id": "t", "name": "mcp__client__x", "input": {"a": 1}}
    assert blocks.block(given) == {"type": "tool_use", "id": "t", "name": "x.y", "input": {}}
    assert given["name"] == "mcp__client__x"  # a copy, never the upstream event's own block
    text = {"type": "text", "text": "a"}
    assert blocks.block(text) is text


def test_completion_settles_its_waiters_once() -> None:
    seen: list[float | None] = []
    pending = Completion("end_turn", None, USAGE, pending=True)
    pending.when_settled(lambda c: seen.append(c.cost_usd))
    assert seen == []
    pending.settle(0.25)
    assert seen == [0.25] and not pending.pending
    pending.when_settled(lambda c: seen.append(c.cost_usd))  # already settled: called at once
    assert seen == [0.25, 0.25]
    pending.settle(0.5)  # a second settle reaches no earlier waiter again
    assert seen == [0.25, 0.25]


def test_normalize_usage() -> None:
    assert normalize_usage(None) == dict.fromkeys(USAGE, 0)
    assert normalize_usage({"input_tokens": "3", "output_tokens": None, "server_tool_use": {"x": 1}}) == {
        "input_tokens": 3, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


# -- the OpenAI surface: streaming and non-streaming say the same ----------------------------

PARITY_CASES: list[tuple[str, list[dict[str, Any]], str]] = [
    ("cut off mid-JSON by max_tokens", [
        message_start(), start(0, {"type": "text", "text": ""}), delta(0, type="text_delta", text="Let me see."),
        stop(0), tool(1, "toolu_a"), json_delta(1, ""), json_delta(1, '{"city": "Pa'), json_delta(1, "ri"),
        stop(1)], "max_tokens"),
    ("cut off right after the opening brace", [
        message_start(), tool(0, "toolu_a"), json_delta(0, "{"), stop(0)], "max_tokens"),
    ("cut off inside a unicode string", [
        message_start(), tool(0, "toolu_a"), json_delta(0, '{"city": "Zürich, ☃'), stop(0)], "max_tokens"),
    ("complete calls, one without arguments", [
        message_start(), tool(0, "toolu_a"), json_delta(0, '{"city":'), json_delta(0, ' "Paris"}'), stop(0),
        tool(1, "toolu_b", "mcp__client__ping"), stop(1)], "tool_use"),
    ("two calls, the second cut off", [
        message_start(), tool(0, "toolu_a"), json_delta(0, '{"city": "Paris"}'), stop(0),
        tool(1, "toolu_b"), json_delta(1, '{"ci'), stop(1)], "max_tokens"),
]


def streamed_calls(events: list[dict[str, Any]], completion: Completion) -> list[dict[str, str]]:
    """What an OpenAI streaming client assembles: per call index, its id, name and the
    concatenation of every ``arguments`` fragment."""
    encoder = OpenAIStreamEncoder("gpt-4o", tool_names=NAMES)
    chunks = [c for event in events for c in encoder.chunks(event)] + encoder.final_chunks(completion)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.get("id", "")
            entry["name"] += call.get("function", {}).get("name", "")
            entry["arguments"] += call["function"].get("arguments", "")
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize(("events", "stop_reason"), [c[1:] for c in PARITY_CASES],
                         ids=[c[0] for c in PARITY_CASES])
def test_openai_streaming_and_non_streaming_carry_the_same_arguments(
        events: list[dict[str, Any]], stop_reason: str) -> None:
    completion = Completion(stop_reason, None, USAGE)
    answer = accumulate(events, completion)
    body = to_chat_completion(answer, model="gpt-4o", completion_id="chatcmpl-x", created=0)
    collected = [{"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                 for c in body["choices"][0]["message"]["tool_calls"]]
    streamed = streamed_calls(events, completion)
    assert collected == streamed
    assert all(call["arguments"] for call in collected)  # never "" (LiteLLM bug 1)
    for call in collected:
        if stop_reason == "tool_use":
            json.loads(call["arguments"])  # a finished call is always valid JSON
