"""Responses stream encoder: a run's upstream events -> OpenAI Responses SSE frames.

A synchronous state machine (the httpx decoder shape): ``feed(event)`` per upstream
event, ``finish(completion)`` once at the end, ``error(exc)`` for a failure after the
stream began; each returns wire-ready frames and does no I/O.  The rules it keeps (each
breaks a real client when broken):

- every payload has ``type`` and a strictly increasing ``sequence_number``; frames carry
  ``event: <type>``; there is no ``[DONE]``;
- ``response.created`` and ``response.in_progress`` open the stream;
- each answer block is one output item: ``response.output_item.added``, its parts and
  deltas, then ``response.output_item.done`` with the whole item (Codex keeps items only
  from ``output_item.done``);
- exactly one of ``response.completed``, ``response.incomplete`` or ``response.failed``
  ends it, the first two from ``finish`` only, so a run that fails after its last token
  never looks finished.

The final response is built from the same ``Answer`` the non-streaming path renders, with
the item ids the stream announced, so both paths agree item for item.  Framing: web/sse.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from claude_code_proxy.chat.answer import AnswerAccumulator, Completion
from claude_code_proxy.exceptions import ClaudeProxyError
from claude_code_proxy.surfaces.openai_responses.errors import failure
from claude_code_proxy.surfaces.openai_responses.render import (
    ResponseFrame,
    item_prefix,
    output_item,
    output_text_part,
    response_object,
    to_response,
)
from claude_code_proxy.web.sse import named_event

Finished = Callable[[dict[str, Any]], None]
"""Called with the finished response, its reasoning always signed (what the store keeps)."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class _Item:
    """One output item being streamed."""

    id: str
    kind: str
    output_index: int
    text: str = ""
    arguments: str = ""
    summary_open: bool = False


class ResponsesStreamEncoder:
    def __init__(self, frame: ResponseFrame, tool_names: dict[str, str], on_finished: Finished | None = None) -> None:
        self.frame = frame
        self.answer = AnswerAccumulator(tool_names)
        self.on_finished = on_finished
        self.sequence = 0
        self.started = False
        self.ids: list[str] = []
        self._items: dict[int, _Item] = {}  # open items, by the answer's block index
        self._shown = 0  # items announced so far: the next output_index
        self._done: list[dict[str, Any]] = []  # finished items, for a failed response

    # -- the encoder protocol ------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> list[bytes]:
        frames = self._start()
        kind = event.get("type")
        self.answer.feed(event)
        if kind == "content_block_start":
            index = self.answer.blocks.get(event["index"])
            if index is not None:
                frames += self._open(index, event.get("content_block") or {})
        elif kind == "content_block_delta":
            index = self.answer.blocks.get(event["index"])
            item = self._items.get(index) if index is not None else None
            if item is not None:
                frames += self._delta(item, event.get("delta") or {})
        elif kind == "content_block_stop":
            index = self.answer.blocks.get(event["index"])
            if index is not None and index in self._items:
                frames += self._close(index)
        return frames

    def finish(self, completion: Completion) -> list[bytes]:
        frames = self._start()
        for index in list(self._items):
            frames += self._close(index)  # upstream closes every block; this only guards
        answer = self.answer.finish(completion)
        now = int(time.time())
        response = to_response(answer, self.frame, self.ids, now)
        name = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        frames.append(self._event(name, {"response": response}))
        if self.on_finished is not None:
            self.on_finished(to_response(answer, self.frame, self.ids, now, internal=True))
        return frames

    def error(self, error: ClaudeProxyError) -> list[bytes]:
        frames = self._start()
        response = response_object(self.frame, status="failed", output=self._done, error=failure(error))
        frames.append(self._event("response.failed", {"response": response}))
        return frames

    # -- internals -----------------------------------------------------------------------
    def _event(self, name: str, payload: dict[str, Any]) -> bytes:
        data = {"type": name, "sequence_number": self.sequence, **payload}
        self.sequence += 1
        return named_event(name, data)

    def _start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        opening = response_object(self.frame, status="in_progress", output=[])
        return [self._event("response.created", {"response": opening}),
                self._event("response.in_progress", {"response": opening})]

    def _open(self, index: int, upstream_block: dict[str, Any]) -> list[bytes]:
        block = self.answer.content[index]
        item_id = new_id(item_prefix(block, self.frame))
        self.ids.append(item_id)
        shown = output_item(block, item_id, self.frame)
        if shown is None:
            return []  # a block the client never sees (server tools...)
        item = self._items[index] = _Item(item_id, shown["type"], self._shown)
        self._shown += 1
        frames = [self._event("response.output_item.added",
                              {"output_index": item.output_index, "item": _in_progress(shown)})]
        if item.kind == "message":
            frames.append(self._event("response.content_part.added", {
                **self._where(item), "content_index": 0, "part": output_text_part("")}))
            if upstream_block.get("text"):
                frames += self._text(item, upstream_block["text"])
        elif item.kind == "reasoning" and upstream_block.get("thinking"):
            frames += self._thinking(item, upstream_block["thinking"])
        elif item.kind == "function_call" and upstream_block.get("input"):
            frames += self._arguments(item, json.dumps(upstream_block["input"], ensure_ascii=False))
        return frames

    def _delta(self, item: _Item, delta: dict[str, Any]) -> list[bytes]:
        dtype = delta.get("type")
        if dtype == "text_delta" and item.kind == "message" and delta.get("text"):
            return self._text(item, delta["text"])
        if dtype == "thinking_delta" and item.kind == "reasoning" and delta.get("thinking"):
            return self._thinking(item, delta["thinking"])
        if dtype == "input_json_delta" and item.kind == "function_call" and delta.get("partial_json"):
            return self._arguments(item, delta["partial_json"])
        if dtype == "input_json_delta":
            item.arguments += delta.get("partial_json", "")  # custom and shell calls: shown whole at the end
        return []  # signatures, citations

    def _text(self, item: _Item, text: str) -> list[bytes]:
        item.text += text
        return [self._event("response.output_text.delta",
                            {**self._where(item), "content_index": 0, "delta": text, "logprobs": []})]

    def _thinking(self, item: _Item, text: str) -> list[bytes]:
        if not self.frame.summary:
            return []  # thinking is shown only as a summary the client asked for
        frames = []
        if not item.summary_open:
            item.summary_open = True
            frames.append(self._event("response.reasoning_summary_part.added", {
                **self._where(item), "summary_index": 0, "part": {"type": "summary_text", "text": ""}}))
        item.text += text
        frames.append(self._event("response.reasoning_summary_text.delta",
                                  {**self._where(item), "summary_index": 0, "delta": text}))
        return frames

    def _arguments(self, item: _Item, text: str) -> list[bytes]:
        item.arguments += text
        return [self._event("response.function_call_arguments.delta", {**self._where(item), "delta": text})]

    def _close(self, index: int) -> list[bytes]:
        item = self._items.pop(index)
        block = self.answer.content[index]
        partial = None
        if block.get("type") == "tool_use" and not block.get("input") and item.arguments.strip():
            try:
                json.loads(item.arguments)
            except ValueError:
                partial = item.arguments  # cut off by max_tokens: the arguments as written
        shown = output_item(block, item.id, self.frame, partial=partial)
        assert shown is not None  # it was shown when opened
        where = self._where(item)
        frames = []
        if item.kind == "message":
            part = shown["content"][0]
            frames.append(self._event("response.output_text.done",
                                      {**where, "content_index": 0, "text": part["text"], "logprobs": []}))
            frames.append(self._event("response.content_part.done", {**where, "content_index": 0, "part": part}))
        elif item.kind == "reasoning" and item.summary_open:
            text = shown["summary"][0]["text"] if shown["summary"] else item.text
            frames.append(self._event("response.reasoning_summary_text.done",
                                      {**where, "summary_index": 0, "text": text}))
            frames.append(self._event("response.reasoning_summary_part.done", {
                **where, "summary_index": 0, "part": {"type": "summary_text", "text": text}}))
        elif item.kind == "function_call":
            frames.append(self._event("response.function_call_arguments.done",
                                      {**where, "name": shown["name"], "arguments": shown["arguments"]}))
        elif item.kind == "custom_tool_call":
            frames.append(self._event("response.custom_tool_call_input.delta", {**where, "delta": shown["input"]}))
            frames.append(self._event("response.custom_tool_call_input.done", {**where, "input": shown["input"]}))
        frames.append(self._event("response.output_item.done", {"output_index": item.output_index, "item": shown}))
        self._done.append(shown)
        return frames

    @staticmethod
    def _where(item: _Item) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.output_index}


def _in_progress(item: dict[str, Any]) -> dict[str, Any]:
    """The item as ``output_item.added`` announces it: empty, in progress."""
    kind = item["type"]
    if kind == "message":
        return {**item, "status": "in_progress", "content": []}
    if kind == "reasoning":
        return {"id": item["id"], "type": "reasoning", "summary": []}
    if kind == "function_call":
        return {**item, "status": "in_progress", "arguments": ""}
    if kind == "custom_tool_call":
        return {**item, "status": "in_progress", "input": ""}
    if kind == "local_shell_call":
        return {**item, "status": "in_progress", "action": {"type": "exec", "command": [], "env": {}}}
    return item

