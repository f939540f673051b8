"""The cache marker the proxy puts on the client's last answer on 4.5-4.7 models
(backend/options.py, ``marks_last_answer``); tests/integration/test_upstream_body.py shows
what it saves with the real CLI."""

from __future__ import annotations

from typing import Any

import pytest

from claude_code_proxy.backend.options import upstream_history
from claude_code_proxy.chat.request import ChatRequest

MARK = {"type": "ephemeral"}


def chat(model: str, answer: list[dict[str, Any]], question: dict[str, Any] | None = None) -> ChatRequest:
    question = question or {"type": "text", "text": "and then?"}
    return ChatRequest(model=model, max_tokens=10, messages=[
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": [question]},
    ])


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-opus-4-7", "claude-haiku-4-5-20251001"])
def test_the_last_answer_is_marked_on_older_models(model: str) -> None:
    answer = [{"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "hello"},
              {"type": "thinking", "thinking": "more", "signature": "t"}]
    history = upstream_history(chat(model, answer))
    # The last block a marker may sit on (thinking blocks may not carry one); nothing else moves.
    assert history[-1]["content"] == [answer[0], {**answer[1], "cache_control": MARK}, answer[2]]
    assert history[0] == {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert "cache_control" not in answer[1]  # the client's request is left as it came


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-4-8", "sonnet", "claude-sonnet-4-50"])
def test_newer_models_get_no_marker(model: str) -> None:
    history = upstream_history(chat(model, [{"type": "text", "text": "hello"}]))
    assert history[-1]["content"] == [{"type": "text", "text": "hello"}]


def test_a_client_marker_anywhere_means_none_is_added() -> None:
    question = {"type": "text", "text": "and then?", "cache_control": MARK}
    history = upstream_history(chat("claude-sonnet-4-5", [{"type": "text", "text": "hello"}], question))
    assert history[-1]["content"] == [{"type": "text", "text": "hello"}]


def test_a_client_marker_inside_a_tool_result_counts_too() -> None:
    result = {"type": "tool_result", "tool_use_id": "t1",
              "content": [{"type": "text", "text": "42", "cache_control": MARK}]}
    history = upstream_history(chat("claude-sonnet-4-5", [{"type": "text", "text": "hello"}], result))
    assert history[-1]["content"] == [{"type": "text", "text": "hello"}]
