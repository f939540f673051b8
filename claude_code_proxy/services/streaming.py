"""Anthropic stream translation: upstream events -> the events the client sees.

Two small synchronous state machines (the httpx decoder shape):

- ``AnthropicStreamEncoder.feed(event) -> [(name, data)]`` for ``stream: true``;
- ``MessageAccumulator.feed(event)`` then ``.finish(completion) -> Message`` for the
  non-streaming answer (and for the OpenAI surface, which converts that Message).

Both keep block indices contiguous from 0 and give client tools back their declared
names (the CLI prefixes them ``mcp__client__``).  SSE framing is in ``api/sse.py``.
"""

from __future__ import annotations

import json
from typing import Any

from claude_code_proxy.exceptions import ClaudeProxyError
from claude_code_proxy.models.chat import Completion

Frame = tuple[str, dict[str, Any]]


class _BlockMap:
    """Upstream block index -> client block index, and client tool names back."""

    def __init__(self, tool_names: dict[str, str] | None = None) -> None:
        self.tool_names = tool_names or {}
        self.indices: dict[int, int] = {}

    def start(self, upstream_index: int) -> int:
        self.indices[upstream_index] = len(self.indices)
        return self.indices[upstream_index]

    def get(self, upstream_index: int) -> int | None:
        return self.indices.get(upstream_index)

    def block(self, block: dict[str, Any]) -> dict[str, Any]:
        if block.get("type") == "tool_use":
            return {**block, "name": self.tool_names.get(block.get("name", ""), block.get("name")), "input": {}}
        return block


class AnthropicStreamEncoder:
    def __init__(self, tool_names: dict[str, str] | None = None) -> None:
        self.blocks = _BlockMap(tool_names)
        self.started = False

    def feed(self, event: dict[str, Any]) -> list[Frame]:
        kind = event["type"]
        if kind == "message_start":
            self.started = True
            return [(kind, event)]
        if kind == "content_block_start":
            index = self.blocks.start(event["index"])
            return [(kind, {"type": kind, "index": index, "content_block": self.blocks.block(event["content_block"])})]
        if kind in ("content_block_delta", "content_block_stop"):
            mapped = self.blocks.get(event["index"])
            if mapped is None:
                return []
            # Indices almost always match upstream's: copy the event only when they do not.
            return [(kind, event if mapped == event["index"] else {**event, "index": mapped})]
        if kind in ("message_delta", "message_stop"):
            return [(kind, event)]
        return []  # pings and unknown events are not forwarded

    def finish(self, completion: Completion) -> list[Frame]:
        return []

    @staticmethod
    def error(error: ClaudeProxyError) -> Frame:
        return ("error", {"type": "error", "error": {"type": error.error_type, "message": error.message}})


class MessageAccumulator:
    """Builds the final Anthropic Message from the same events."""

    def __init__(self, tool_names: dict[str, str] | None = None) -> None:
        self.blocks = _BlockMap(tool_names)
        self.message: dict[str, Any] = {}
        self.content: list[dict[str, Any]] = []
        self._json: dict[int, str] = {}

    def feed(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "message_start":
            self.message = dict(event["message"])
        elif kind == "content_block_start":
            index = self.blocks.start(event["index"])
            self.content.append(dict(self.blocks.block(event["content_block"])))
            self._json[index] = ""
        elif kind == "content_block_delta":
            found = self.blocks.get(event["index"])
            if found is None:
                return
            index = found
            block, delta = self.content[index], event["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta["text"]
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif dtype == "signature_delta":
                block["signature"] = block.get("signature", "") + delta["signature"]
            elif dtype == "input_json_delta":
                self._json[index] += delta["partial_json"]
            elif dtype == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
        elif kind == "content_block_stop":
            stopped = self.blocks.get(event["index"])
            if stopped is not None and self.content[stopped].get("type") == "tool_use":
                raw = self._json.get(stopped) or "{}"
                try:
                    self.content[stopped]["input"] = json.loads(raw)
                except ValueError:
                    # Cut off by max_tokens mid-arguments: keep the partial call visible.
                    self.content[stopped]["input"] = {}

    def finish(self, completion: Completion) -> dict[str, Any]:
        return {
            "id": self.message.get("id") or "msg_proxy",
            "type": "message",
            "role": "assistant",
            "model": self.message.get("model") or completion.model or "",
            "content": self.content,
            "stop_reason": completion.stop_reason,
            "stop_sequence": completion.stop_sequence,
            "usage": dict(completion.usage),
        }
