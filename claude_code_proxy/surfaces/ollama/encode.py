"""Ollama stream translation: upstream Anthropic events -> NDJSON lines.

A small synchronous state machine (the httpx decoder shape): ``feed(event)`` per
upstream event, ``finish(completion)`` once at the end, ``error(exc)`` for a failure
after the stream began.  The rules it keeps:

- every line carries ``model`` (the name the client sent), ``created_at``, the
  ``message`` (``/api/chat``) or ``response`` (``/api/generate``) fragment, and ``done``;
- text and thinking go out as they arrive, thinking only ever in ``thinking``;
- a tool call goes out whole, once its arguments are complete (Ollama's arguments are an
  object, never a fragment of JSON text);
- exactly one line with ``done: true``, sent from ``finish`` (so a run that fails after
  its last token never looks finished), with the measured durations and token counts;
- a failure is one ``{"error": ...}`` line, which the official client raises.
Framing: web/ndjson.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from claude_code_proxy.chat.answer import Completion
from claude_code_proxy.exceptions import ClaudeProxyError
from claude_code_proxy.surfaces.ollama.errors import message
from claude_code_proxy.surfaces.ollama.translate import Marks, final_fields, stats, tool_call
from claude_code_proxy.web.ndjson import ndjson_line

Kind = Literal["chat", "generate"]


def created_at() -> str:
    """Now, as Ollama stamps its objects (RFC 3339, UTC)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class _Call:
    id: str
    name: str
    arguments: str = ""
    sent: bool = False


@dataclass
class _Blocks:
    kinds: dict[int, str] = field(default_factory=dict)
    calls: dict[int, _Call] = field(default_factory=dict)


class OllamaStreamEncoder:
    def __init__(
        self,
        model: str,
        tool_names: dict[str, str] | None = None,
        *,
        kind: Kind = "chat",
        clock: Callable[[], Marks],
        stamp: Callable[[], str] = created_at,
    ) -> None:
        self.model = model
        self.tool_names = tool_names or {}
        self.kind = kind
        self.clock = clock
        self.stamp = stamp
        self.finished = False
        self._blocks = _Blocks()
        self._sent_calls = 0

    def feed(self, event: dict[str, Any]) -> list[bytes]:
        return [ndjson_line(line) for line in self.lines(event)]

    def finish(self, completion: Completion) -> list[bytes]:
        return [ndjson_line(line) for line in self.final_lines(completion)]

    @staticmethod
    def error(error: ClaudeProxyError) -> list[bytes]:
        return [ndjson_line({"error": message(error)})]

    # -- lines -----------------------------------------------------------------------
    def lines(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "content_block_start":
            return self._block_start(event["index"], event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event["index"], event.get("delta") or {})
        if kind == "content_block_stop":
            call = self._blocks.calls.get(event["index"])
            return self._tool_calls([call]) if call is not None else []
        # message_start, message_delta and message_stop wait for ``finish``; pings and
        # unknown events carry nothing for the client.
        return []

    def final_lines(self, completion: Completion) -> list[dict[str, Any]]:
        # A tool call cut off by max_tokens never saw its block stop: send what it has.
        lines = self._tool_calls(list(self._blocks.calls.values()))
        last = self._line()
        last.update(final_fields(completion.stop_reason, stats(completion.usage, self.clock())))
        self.finished = True
        return [*lines, last]

    # -- internals -------------------------------------------------------------------
    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = str(block.get("type"))
        self._blocks.kinds[index] = kind
        if kind == "tool_use":
            name = str(block.get("name", ""))
            call = self._blocks.calls[index] = _Call(str(block.get("id", "")), self.tool_names.get(name, name))
            if block.get("input"):  # Anthropic streams the input as deltas; others may not
                call.arguments = json.dumps(block["input"])
            return []
        if kind in ("text", "thinking") and block.get(kind):
            return [self._line(**{kind: block[kind]})]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = self._blocks.kinds.get(index)
        dtype = delta.get("type")
        if dtype == "text_delta" and kind == "text" and delta.get("text"):
            return [self._line(text=delta["text"])]
        if dtype == "thinking_delta" and kind == "thinking" and delta.get("thinking"):
            return [self._line(thinking=delta["thinking"])]
        if dtype == "input_json_delta" and index in self._blocks.calls:
            self._blocks.calls[index].arguments += delta.get("partial_json", "")
        return []  # signatures, citations, server-tool blocks

    def _tool_calls(self, calls: list[_Call]) -> list[dict[str, Any]]:
        ready = []
        for call in calls:
            if call.sent:
                continue
            call.sent = True
            block = {"id": call.id, "name": call.name, "input": _object(call.arguments)}
            ready.append(tool_call(block, self._sent_calls))
            self._sent_calls += 1
        return [self._line(tool_calls=ready)] if ready else []

    def _line(self, *, text: str = "", thinking: str | None = None,
              tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        line: dict[str, Any] = {"model": self.model, "created_at": self.stamp()}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking is not None:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            line["message"] = message
        else:
            line["response"] = text
            if thinking is not None:
                line["thinking"] = thinking
        line["done"] = False
        return line


def _object(arguments: str) -> dict[str, Any]:
    """Complete arguments as an object; arguments cut off mid-JSON become ``{}``."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
