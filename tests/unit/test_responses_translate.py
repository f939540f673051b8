"""Pure parts of the Responses surface: item translation, the reasoning blob, the store."""

from __future__ import annotations

from typing import Any

import pytest

from claude_code_proxy.chat.answer import Answer
from claude_code_proxy.exceptions import InvalidRequestError, NotFoundError
from claude_code_proxy.surfaces.openai_responses.models import ResponsesRequest
from claude_code_proxy.surfaces.openai_responses.render import (
    ResponseFrame,
    ToolSpec,
    decode_reasoning,
    encode_reasoning,
    output_items,
    to_response,
)
from claude_code_proxy.surfaces.openai_responses.store import ResponseStore, StoredResponse, with_ids
from claude_code_proxy.surfaces.openai_responses.translate import from_responses


def translate(body: dict[str, Any], **kwargs: Any) -> Any:
    return from_responses(ResponsesRequest.model_validate({"model": "gpt-4o", **body}), "sonnet", 4096,
                          response_id="resp_1", created_at=1, **kwargs)


def test_reasoning_blobs_round_trip_and_foreign_ones_are_ignored() -> None:
    thinking = {"type": "thinking", "thinking": "Hmm, ünïcode.", "signature": "sig=="}
    assert decode_reasoning(encode_reasoning(thinking)) == thinking
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    assert decode_reasoning(encode_reasoning(redacted)) == redacted
    for foreign in (None, "", "gAAAAABo-openai", "ccp1.not-base64!!", "ccp1.W10=", "ccp1.eyJ0aGlua2luZyI6IngifQ=="):
        assert decode_reasoning(foreign) is None, foreign


def test_history_items_become_alternating_turns() -> None:
    result = translate({"tools": [{"type": "local_shell"}, {"type": "custom", "name": "apply_patch"}], "input": [
        {"role": "user", "content": "go"},
        {"type": "local_shell_call", "call_id": "c1", "status": "completed",
         "action": {"type": "exec", "command": ["ls"], "env": {}}},
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "local_shell_call_output", "id": "c1", "output": "a.txt"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "next"}]},
    ]})
    assert result.chat.messages == [
        {"role": "user", "content": [{"type": "text", "text": "go"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "c1", "name": "local_shell", "input": {"command": ["ls"], "env": {}}},
            {"type": "tool_use", "id": "c2", "name": "apply_patch", "input": {"input": "*** Begin Patch"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "a.txt"},
            {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "ok"}]},
            {"type": "text", "text": "next"}]},
    ]


def test_images_by_url_and_data_are_carried_and_file_ids_refused() -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    result = translate({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{png}"},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"}]}]})
    sources = [b["source"] for b in result.chat.messages[0]["content"] if b["type"] == "image"]
    assert sources == [{"type": "base64", "media_type": "image/png", "data": png},
                       {"type": "url", "url": "https://example.com/cat.png"}]
    with pytest.raises(InvalidRequestError) as refused:
        translate({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]})
    assert refused.value.param == "input.0.content.0.image_url"
    with pytest.raises(InvalidRequestError):
        translate({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "http://127.0.0.1/x.png"}]}]})


def test_dropped_tools_and_items_are_reported() -> None:
    result = translate({"tools": [{"type": "web_search"}, {"type": "mcp", "server_label": "x"},
                                  {"type": "function", "name": "f"}],
                        "input": [{"type": "item_reference", "id": "x"}, {"role": "user", "content": "hi"}]})
    assert result.dropped_tools == ["web_search", "mcp"] and result.dropped_items == ["item_reference"]
    assert [t.name for t in result.chat.tools] == ["f"]


def test_reasoning_effort_sets_a_budget_below_max_output_tokens() -> None:
    assert translate({"input": "x", "reasoning": {"effort": "medium"}}).chat.thinking == {
        "type": "enabled", "budget_tokens": 2048}
    small = translate({"input": "x", "reasoning": {"effort": "high"}, "max_output_tokens": 1500}).chat
    assert small.thinking == {"type": "enabled", "budget_tokens": 1499} and small.max_tokens == 1500
    assert translate({"input": "x", "reasoning": {"effort": "none"}}).chat.thinking is None
    forced = translate({"input": "x", "reasoning": {"effort": "low"}, "tool_choice": "required",
                        "tools": [{"type": "function", "name": "f"}]}).chat
    assert forced.thinking is None  # upstream refuses thinking with a forced tool


def frame(**tools: ToolSpec) -> ResponseFrame:
    return ResponseFrame(id="resp_1", created_at=1, model="gpt-4o", tools=dict(tools), summary=True)


def test_a_cut_off_call_keeps_its_partial_arguments_and_is_incomplete() -> None:
    answer = Answer("m", "claude", [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}], "max_tokens", None,
                    {}, partial_tool_input={"t1": '{"city": "Par'})
    response = to_response(answer, frame(f=ToolSpec("function", "f")), ["fc_1"], 2)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["arguments"] == '{"city": "Par' and response["output"][0]["status"] == "incomplete"


def test_internal_items_always_carry_the_signed_thinking() -> None:
    answer = Answer("m", "claude", [{"type": "thinking", "thinking": "t", "signature": "s"}], "end_turn", None, {})
    public = output_items(answer, frame(), ["rs_1"])
    internal = output_items(answer, frame(), ["rs_1"], internal=True)
    assert "encrypted_content" not in public[0] and public[0]["summary"] == [{"type": "summary_text", "text": "t"}]
    assert decode_reasoning(internal[0]["encrypted_content"]) == {"type": "thinking", "thinking": "t",
                                                                  "signature": "s"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored(response_id: str) -> StoredResponse:
    return StoredResponse({"id": response_id, "output": []}, [], [], show_encrypted=False)


def test_the_store_is_bounded_by_count_and_age_and_scoped() -> None:
    clock = Clock()
    store = ResponseStore(max_entries=2, max_age=60, clock=clock)
    for name in ("a", "b", "c"):
        store.put("k1", stored(name))
    assert len(store) == 2
    with pytest.raises(NotFoundError):
        store.get("k1", "a")  # the oldest went first
    assert store.get("k1", "c").response["id"] == "c"
    with pytest.raises(NotFoundError):
        store.get("k2", "c")  # another key sees nothing
    clock.now += 61
    with pytest.raises(NotFoundError):
        store.get("k1", "c")
    assert len(store) == 0
    disabled = ResponseStore(max_entries=0, max_age=60)
    disabled.put("", stored("x"))
    assert len(disabled) == 0


def test_input_items_get_ids_and_message_parts() -> None:
    items = with_ids([{"role": "user", "content": "hi"}, {"type": "function_call_output", "call_id": "c",
                                                          "output": "x", "id": "fco_mine"}], lambda p: f"{p}_new")
    assert items[0] == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}],
                        "status": "completed", "id": "msg_new"}
    assert items[1]["id"] == "fco_mine"
