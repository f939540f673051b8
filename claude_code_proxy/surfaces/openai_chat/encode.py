"""OpenAI stream translation: upstream Anthropic events -> ``chat.completion.chunk`` dicts.

A small synchronous state machine (the httpx decoder shape): ``feed(event)`` per
upstream event, ``finish(completion)`` once at the end, ``error(exc)`` for a failure
after the stream began.  The rules it keeps (each breaks a real client when broken;
../shared translation reference §3.1):

- one ``id``, ``created`` and ``model`` on every chunk;
- ``role`` only in the first chunk (the SDK's helper concatenates repeats);
- tool calls numbered 0, 1, 2... over tool calls only; ``id``/``type``/``name`` only in
  a call's first delta; a call without arguments ends up as ``"{}"``, never ``""``;
- exactly one chunk with a ``finish_reason``, sent from ``finish`` (so a run that fails
  after its last token never looks finished), then the usage chunk with ``choices: []``
  when asked for;
- thinking never reaches ``content``; it is sent as ``reasoning_content`` (an extension
  clients such as Open WebUI display, and the SDK ignores).

Each method returns wire-ready SSE frames (``data: <json>``); ``finish`` ends with
``data: [DONE]``, an error frame never does.  Framing: web/sse.py.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from claude_code_proxy.chat.answer import Completion
from claude_code_proxy.exceptions import ClaudeProxyError
from claude_code_proxy.surfaces.openai_chat.errors import error_object
from claude_code_proxy.surfaces.openai_chat.translate import finish_reason, usage
from claude_code_proxy.web.sse import openai_data

Chunk = dict[str, Any]


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


@dataclass
class _Block:
    kind: str
    tool_index: int = -1
    has_arguments: bool = False


class OpenAIStreamEncoder:
    def __init__(
        self,
        model: str,
        include_usage: bool = False,
        tool_names: dict[str, str] | None = None,
        *,
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.tool_names = tool_names or {}
        self.id = completion_id or new_completion_id()
        self.created = int(time.time()) if created is None else created
        self.started = False
        self.finished = False
        self._blocks: dict[int, _Block] = {}
        self._tool_calls = 0

    def feed(self, event: dict[str, Any]) -> list[bytes]:
        return [openai_data(chunk) for chunk in self.chunks(event)]

    def finish(self, completion: Completion) -> list[bytes]:
        return [*(openai_data(chunk) for chunk in self.final_chunks(completion)), openai_data("[DONE]")]

    @staticmethod
    def error(error: ClaudeProxyError) -> list[bytes]:
        return [openai_data({"error": error_object(error)})]

    # -- chunks ----------------------------------------------------------------------
    def chunks(self, event: dict[str, Any]) -> list[Chunk]:
        chunks = self._start()
        kind = event.get("type")
        if kind == "content_block_start":
            chunks += self._block_start(event["index"], event.get("content_block") or {})
        elif kind == "content_block_delta":
            chunks += self._block_delta(event["index"], event.get("delta") or {})
        elif kind == "content_block_stop":
            block = self._blocks.get(event["index"])
            if block is not None and block.kind == "tool_use" and not block.has_arguments:
                chunks.append(self._tool_delta(block, {"arguments": "{}"}))
        # message_start only opens the stream; message_delta/message_stop wait for
        # ``finish``; pings and unknown events carry nothing for the client.
        return chunks

    def final_chunks(self, completion: Completion) -> list[Chunk]:
        chunks = self._start()
        chunks.append(self._chunk({}, finish_reason(completion.stop_reason, self._tool_calls > 0)))
        if self.include_usage:
            chunks.append({**self._base(), "choices": [], "usage": usage(completion.usage)})
        self.finished = True
        return chunks

    # -- internals -------------------------------------------------------------------
    def _start(self) -> list[Chunk]:
        if self.started:
            return []
        self.started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: int, block: dict[str, Any]) -> list[Chunk]:
        kind = str(block.get("type"))
        state = self._blocks[index] = _Block(kind)
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": block["thinking"]})]
        if kind != "tool_use":
            return []
        state.tool_index = self._tool_calls
        self._tool_calls += 1
        name = str(block.get("name", ""))
        first = {
            "index": state.tool_index,
            "id": block.get("id", ""),
            "type": "function",
            "function": {"name": self.tool_names.get(name, name), "arguments": ""},
        }
        if block.get("input"):  # Anthropic streams the input as deltas; others may not
            first["function"]["arguments"] = json.dumps(block["input"], ensure_ascii=False)
            state.has_arguments = True
        return [self._chunk({"tool_calls": [first]})]

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[Chunk]:
        block = self._blocks.get(index)
        if block is None:
            return []
        dtype = delta.get("type")
        if dtype == "text_delta" and block.kind == "text" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if dtype == "thinking_delta" and block.kind == "thinking" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if dtype == "input_json_delta" and block.kind == "tool_use" and delta.get("partial_json"):
            block.has_arguments = True
            return [self._tool_delta(block, {"arguments": delta["partial_json"]})]
        return []  # signatures, citations, server-tool blocks

    def _tool_delta(self, block: _Block, function: dict[str, Any]) -> Chunk:
        return self._chunk({"tool_calls": [{"index": block.tool_index, "function": function}]})

    def _base(self) -> Chunk:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        return {**self._base(), "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
