"""Anthropic stream encoder: a run's upstream events -> the SSE frames the client sees.

A synchronous state machine (the httpx decoder shape): ``feed(event)`` per upstream
event, ``finish(completion)`` once at the end, ``error(exc)`` for a failure after the
stream began; each returns wire-ready frames and does no I/O.  Block indices stay
contiguous from 0 and client tools get their declared names back.  Framing: web/sse.py.
"""

from __future__ import annotations

from typing import Any

from claude_code_proxy.chat.answer import BlockMap, Completion
from claude_code_proxy.exceptions import ClaudeProxyError
from claude_code_proxy.surfaces.anthropic.errors import error_object
from claude_code_proxy.web.sse import anthropic_event

_PASS_THROUGH = frozenset({"message_start", "message_delta", "message_stop"})


class AnthropicStreamEncoder:
    def __init__(self, tool_names: dict[str, str] | None = None) -> None:
        self.blocks = BlockMap(tool_names)

    def feed(self, event: dict[str, Any]) -> list[bytes]:
        kind = event["type"]
        if kind in _PASS_THROUGH:
            return [anthropic_event(kind, event)]
        if kind == "content_block_start":
            index = self.blocks.start(event["index"])
            block = self.blocks.block(event["content_block"])
            return [anthropic_event(kind, {"type": kind, "index": index, "content_block": block})]
        if kind in ("content_block_delta", "content_block_stop"):
            mapped = self.blocks.get(event["index"])
            if mapped is None:
                return []
            # Indices almost always match upstream's: copy the event only when they do not.
            return [anthropic_event(kind, event if mapped == event["index"] else {**event, "index": mapped})]
        return []  # pings and unknown events are not forwarded

    def finish(self, completion: Completion) -> list[bytes]:
        return []  # message_stop has gone out already: the run ends at it

    @staticmethod
    def error(error: ClaudeProxyError) -> list[bytes]:
        return [anthropic_event("error", {"type": "error", "error": error_object(error)})]
