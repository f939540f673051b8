"""The Anthropic translator as plain data in, plain data out (no server, no CLI)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from anthropic.types import Message

from claude_code_proxy.chat.answer import Answer
from claude_code_proxy.chat.request import ChatRequest, ClientTool
from claude_code_proxy.exceptions import InvalidRequestError
from claude_code_proxy.surfaces.anthropic.models import MessagesRequest
from claude_code_proxy.surfaces.anthropic.translate import from_anthropic, to_message
from claude_code_proxy.web.body import parse

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
HI = {"role": "user", "content": "hi"}


def translate(body: dict[str, Any]) -> ChatRequest:
    request = parse(MessagesRequest, {"model": "claude-sonnet-4-5", "max_tokens": 2048, **body})
    return from_anthropic(request, "sonnet")


def refused(body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        translate(body)
    return info.value


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


# -- blocks: request body -> the upstream wire form ------------------------------------------

BLOCK_CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    ("text", text("a"), text("a")),
    ("whitespace-only text is dropped", text("  \n"), None),
    ("base64 image", {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}),
    ("url image", {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
     {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}),
    ("a document passes as given",
     {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}, "title": "t"},
     {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}),
    ("a url document is checked, then passed",
     {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
     {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}),
    ("redacted thinking", {"type": "redacted_thinking", "data": "opaque"},
     {"type": "redacted_thinking", "data": "opaque"}),
    ("cache_control is kept on any block",
     text("long", cache_control={"type": "ephemeral", "ttl": "1h"}),
     text("long", cache_control={"type": "ephemeral", "ttl": "1h"})),
    ("a cache_control that is not an object is dropped", text("a", cache_control="yes"), text("a")),
    ("unknown block fields are not forwarded", text("a", citations=None, whatever=1), text("a")),
]


@pytest.mark.parametrize(("block", "expected"), [c[1:] for c in BLOCK_CASES], ids=[c[0] for c in BLOCK_CASES])
def test_user_blocks(block: dict[str, Any], expected: dict[str, Any] | None) -> None:
    chat = translate({"messages": [user(text("first"), block)]})
    assert chat.messages == [{"role": "user", "content": [text("first"), *([expected] if expected else [])]}]


def test_a_tool_round_trip_keeps_ids_alike_and_results_first() -> None:
    chat = translate({"messages": [
        HI,
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me look.", "signature": "c2ln"},
            text("Checking."),
            {"type": "tool_use", "id": "call.1:a", "name": "get_weather", "input": {"city": "P"}},
        ]},
        user(text("and?"),
             {"type": "tool_result", "tool_use_id": "call.1:a", "is_error": True,
              "content": [text("no"), text(" "), {"type": "image", "source": {
                  "type": "base64", "media_type": "image/png", "data": PNG}}]},
             {"type": "tool_result", "tool_use_id": "", "content": "plain", "is_error": False}),
    ]})
    assert chat.messages == [
        {"role": "user", "content": [text("hi")]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me look.", "signature": "c2ln"},
            text("Checking."),
            {"type": "tool_use", "id": "call_1_a", "name": "get_weather", "input": {"city": "P"}},
        ]},
        {"role": "user", "content": [
            # Results lead their turn; ids are sanitised the same way as the call's.
            {"type": "tool_result", "tool_use_id": "call_1_a", "is_error": True, "content": [
                text("no"), {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
            {"type": "tool_result", "tool_use_id": "toolu_empty", "content": "plain"},
            text("and?"),
        ]},
    ]


def test_turns_merge_and_a_trailing_prefill_is_dropped() -> None:
    chat = translate({"messages": [
        HI, {"role": "user", "content": "   "}, user(text("again")),
        {"role": "assistant", "content": "ok"}, {"role": "assistant", "content": []},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "Sure, the answer is"},  # prefill: the CLI cannot send it
    ]})
    assert chat.messages == [
        {"role": "user", "content": [text("hi"), text("again")]},
        {"role": "assistant", "content": [text("ok")]},
        {"role": "user", "content": [text("more")]},
    ]


def test_a_conversation_of_nothing_but_a_prefill_is_refused() -> None:
    error = refused({"messages": [{"role": "assistant", "content": "Sure"}]})
    assert error.param == "messages"


# -- system, thinking, tools and the other fields -------------------------------------------

@pytest.mark.parametrize(("system", "expected"), [
    ("Be brief.", "Be brief."),
    ([text("A"), text(""), text("B", cache_control={"type": "ephemeral"})], "A\nB"),
    ("", None),
    ([], None),
    (None, None),
])
def test_system(system: Any, expected: str | None) -> None:
    assert translate({"messages": [HI], "system": system}).system == expected


@pytest.mark.parametrize(("thinking", "expected"), [
    ({"type": "enabled", "budget_tokens": 1024}, {"type": "enabled", "budget_tokens": 1024}),
    ({"type": "adaptive"}, {"type": "adaptive"}),
    ({"type": "disabled"}, None),
    (None, None),
])
def test_thinking(thinking: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    assert translate({"messages": [HI], "thinking": thinking}).thinking == expected


def test_the_thinking_budget_must_stay_below_max_tokens() -> None:
    error = refused({"messages": [HI], "thinking": {"type": "enabled", "budget_tokens": 2048}})
    assert error.param == "thinking.budget_tokens"


def test_tools_choice_and_stops() -> None:
    chat = translate({
        "messages": [HI],
        "tools": [{"name": "get.weather", "description": "Weather.",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                  {"name": "ping"}],
        "tool_choice": {"type": "tool", "name": "ping", "disable_parallel_tool_use": True},
        "stop_sequences": ["END", "", "  ", "\n\nHuman:"],
        "temperature": 0.2, "top_p": 0.9, "top_k": 5, "metadata": {"user_id": "u"},
    })
    assert chat.tools == [
        ClientTool("get.weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}}),
        ClientTool("ping", "", {"type": "object", "properties": {}}),
    ]
    assert chat.tools[0].upstream_name == "mcp__client__get_weather"
    assert chat.tool_choice == {"type": "tool", "name": "ping", "disable_parallel_tool_use": True}
    assert chat.stop_sequences == ["END", "\n\nHuman:"]
    assert (chat.model, chat.max_tokens, chat.output_schema) == ("sonnet", 2048, None)


def test_sampling_fields_change_nothing() -> None:
    plain = translate({"messages": [HI]})
    sampled = translate({"messages": [HI], "temperature": 1, "top_p": 0.5, "top_k": 1})
    assert sampled == plain


# -- bad input: a 400 that names the field, before any CLI -----------------------------------

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("NUL in text", {"messages": [{"role": "user", "content": "a\x00b"}]}, "messages.0.content"),
    ("lone surrogate in a block", {"messages": [HI, {"role": "assistant", "content": "x"},
                                                user(text("\ud800"))]}, "messages.2.content"),
    ("NUL in a tool input", {"messages": [user({"type": "tool_use", "id": "t", "name": "f",
                                                "input": {"k": "\x00"}})]}, "messages.0.content"),
    ("NUL in the system prompt", {"messages": [HI], "system": "\x00"}, "system"),
    ("NUL in a system block", {"messages": [HI], "system": [text("a\x00")]}, "system"),
    ("bad base64", {"messages": [user({"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "not base64!"}})]}, "messages.0.content"),
    ("empty image", {"messages": [user({"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": ""}})]}, "messages.0.content"),
    ("loopback image URL", {"messages": [user({"type": "image", "source": {
        "type": "url", "url": "http://127.1/x.png"}})]}, "messages.0.content"),
    ("file image URL", {"messages": [user({"type": "image", "source": {
        "type": "url", "url": "file:///etc/passwd"}})]}, "messages.0.content"),
    ("private document URL", {"messages": [user({"type": "document", "source": {
        "type": "url", "url": "http://10.0.0.1/a.pdf"}})]}, "messages.0.content"),
    ("an image inside a tool result is checked too", {"messages": [user({
        "type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {
            "type": "url", "url": "http://localhost/a.png"}}]})]}, "messages.0.content"),
    ("no messages", {"messages": []}, "messages"),
    ("only empty text", {"messages": [{"role": "user", "content": " "}]}, "messages"),
]


@pytest.mark.parametrize(("body", "param"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_names_the_field(body: dict[str, Any], param: str) -> None:
    assert refused(body).param == param


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stream": "yes"}, "stream"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"messages": [user({"type": "image", "source": {"type": "base64", "media_type": "image/bmp",
                                                      "data": PNG}})]}, "messages.0.content.0.source.media_type"),
    # pydantic names the union member ("enabled", "base64") in its path; the client never wrote it.
    ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"messages": [user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]})]},
     "messages.0.content.0.content.0.text"),
    ({"tools": [{"name": ""}]}, "tools.0.name"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"temperature": 1.5}, "temperature"),
])
def test_wrong_types_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse(MessagesRequest, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [HI], **body})
    assert info.value.param == param


# -- response --------------------------------------------------------------------------------

def test_to_message_is_a_valid_anthropic_message() -> None:
    answer = Answer(
        id="msg_1", model="claude-sonnet-4-5",
        content=[{"type": "thinking", "thinking": "Hmm.", "signature": "c2ln"}, text("Hi."),
                 {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}}],
        stop_reason="tool_use", stop_sequence=None,
        usage={"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2},
    )
    body = to_message(answer)
    assert body == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": answer.content, "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 2},
    }
    assert body["usage"] is not answer.usage  # a copy: rendering never aliases the answer
    message = Message.model_validate(body)  # the SDK's own model, validated (not constructed)
    assert message.content[2].type == "tool_use" and message.content[2].input == {"city": "Paris"}


def test_to_message_with_a_stop_sequence() -> None:
    answer = Answer(id="msg_2", model="m", content=[text("a")], stop_reason="stop_sequence",
                    stop_sequence="END", usage={"input_tokens": 1, "output_tokens": 1})
    body = to_message(answer)
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")
    Message.model_validate(body)
