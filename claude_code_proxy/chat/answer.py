"""The neutral answer: what a backend run yields, and the whole answer assembled from it.

A run yields upstream Anthropic stream events (dicts) and ends with one ``Completion``.
``AnswerAccumulator`` is the synchronous state machine (the httpx decoder shape) that
turns those items into an ``Answer`` for non-streaming responses; every surface renders
that ``Answer`` in its own wire shape.  ``BlockMap`` keeps block indices contiguous from
0 and gives client tools back their declared names (the CLI prefixes them
``mcp__client__``); the stream encoders use it too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass
class Completion:
    """The end of a successful run: what it cost and why it stopped.

    A completion can arrive ``pending``: the answer is complete (its usage is the model's
    own, from the stream), but the CLI's cost accounting comes a few milliseconds later.
    The client is not kept waiting for it; ``when_settled`` callbacks get the final figures.
    """

    stop_reason: str | None
    stop_sequence: str | None
    usage: dict[str, int]
    cost_usd: float | None = None
    model: str | None = None
    pending: bool = False
    _waiters: list[Callable[[Completion], None]] = field(default_factory=list, repr=False)

    def settle(self, cost_usd: float | None) -> None:
        self.cost_usd = cost_usd
        self.pending = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter(self)

    def when_settled(self, waiter: Callable[[Completion], None]) -> None:
        if self.pending:
            self._waiters.append(waiter)
        else:
            waiter(self)


BackendItem = dict[str, Any] | Completion
"""One item of a backend run: an upstream Anthropic stream event, or the final Completion."""


def normalize_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    return {key: int(usage.get(key) or 0) for key in USAGE_KEYS}


@dataclass
class Answer:
    """A whole answer in neutral form: Anthropic content blocks with client tool names."""

    id: str
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None
    usage: dict[str, int]
    partial_tool_input: dict[str, str] = field(default_factory=dict)
    """Tool-call arguments cut off mid-JSON (by ``max_tokens``), by tool_use id, exactly as
    the model wrote them; such a block's ``input`` is ``{}``."""


class BlockMap:
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


_DELTAS = {  # delta type -> (the block field it extends, the delta's key)
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "signature_delta": ("signature", "signature"),
    "input_json_delta": ("json", "partial_json"),
}


class AnswerAccumulator:
    """Builds the whole ``Answer`` from a run's events."""

    def __init__(self, tool_names: dict[str, str] | None = None) -> None:
        self.blocks = BlockMap(tool_names)
        self.message: dict[str, Any] = {}
        self.content: list[dict[str, Any]] = []
        # Deltas are gathered as pieces and joined once: appending to a growing string
        # copies it every time, and a long answer has hundreds of thousands of deltas.
        self._pieces: dict[tuple[int, str], list[str]] = {}
        self._partial: dict[str, str] = {}

    def feed(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "message_start":
            self.message = dict(event["message"])
        elif kind == "content_block_start":
            self.blocks.start(event["index"])
            self.content.append(dict(self.blocks.block(event["content_block"])))
        elif kind == "content_block_delta":
            found = self.blocks.get(event["index"])
            if found is None:
                return
            delta = event["delta"]
            dtype = delta.get("type")
            if dtype in _DELTAS:
                name, key = _DELTAS[dtype]
                self._pieces.setdefault((found, name), []).append(delta[key])
            elif dtype == "citations_delta":
                self.content[found].setdefault("citations", []).append(delta["citation"])
        elif kind == "content_block_stop":
            stopped = self.blocks.get(event["index"])
            if stopped is not None:
                self._join(stopped)
                if self.content[stopped].get("type") == "tool_use":
                    self._close_tool_use(self.content[stopped], "".join(self._pieces.pop((stopped, "json"), [])))

    def _join(self, index: int) -> None:
        """A block's text pieces joined into its fields, once (at its stop, or the answer's end)."""
        block = self.content[index]
        for name in ("text", "thinking", "signature"):
            pieces = self._pieces.pop((index, name), None)
            if pieces is not None:
                block[name] = block.get(name, "") + "".join(pieces)

    def _close_tool_use(self, block: dict[str, Any], raw: str) -> None:
        try:
            block["input"] = json.loads(raw or "{}")
        except ValueError:
            # Cut off by max_tokens mid-arguments: an empty input where an object is
            # required, and the partial text for surfaces that carry arguments as text.
            block["input"] = {}
            self._partial[str(block.get("id", ""))] = raw

    def finish(self, completion: Completion) -> Answer:
        for index in range(len(self.content)):
            self._join(index)  # blocks the answer ended without stopping
        return Answer(
            id=self.message.get("id") or "msg_proxy",
            model=self.message.get("model") or completion.model or "",
            content=self.content,
            stop_reason=completion.stop_reason,
            stop_sequence=completion.stop_sequence,
            usage=dict(completion.usage),
            partial_tool_input=self._partial,
        )
