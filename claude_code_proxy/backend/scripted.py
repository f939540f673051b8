"""A backend that plays scripted answers in memory: fast tests of routes, guards and encoders.

No CLI, no upstream: ``ScriptedBackend(script)`` calls ``script(request)`` for each run and
plays the items it returns (upstream Anthropic events, then a ``Completion``); an exception
in the list is raised at its place.  It records every request it ran, so a test can assert
what a route handed over.  The real backend's integration tests use the real CLI instead.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from claude_code_proxy.backend.admission import Ticket
from claude_code_proxy.backend.base import BackendStats, CliStatus
from claude_code_proxy.backend.quota import account_limited_error
from claude_code_proxy.chat.answer import BackendItem, Completion
from claude_code_proxy.chat.request import ChatRequest
from claude_code_proxy.exceptions import ServiceUnavailableError

Script = Callable[[ChatRequest], Sequence[BackendItem | BaseException]]


def text_answer(
    text: str, *, model: str = "claude-scripted", stop_reason: str = "end_turn", chunk: int = 4,
    input_tokens: int = 10,
) -> list[BackendItem]:
    """The items of a plain text answer, streamed ``chunk`` characters at a time."""
    usage = {"input_tokens": input_tokens, "output_tokens": max(1, len(text) // 4),
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    items: list[BackendItem] = [
        {"type": "message_start", "message": {
            "id": "msg_scripted", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    items += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[i:i + chunk]}}
              for i in range(0, len(text), chunk)]
    items += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
         "usage": {"output_tokens": usage["output_tokens"]}},
        {"type": "message_stop"},
        Completion(stop_reason, None, usage, 0.0, model),
    ]
    return items


class ScriptedBackend:
    def __init__(self, script: Script | None = None, status: CliStatus | None = None) -> None:
        self.script = script or (lambda request: text_answer("Hello from the script."))
        self.requests: list[ChatRequest] = []
        self.draining = False
        self.rate_limit: dict[str, Any] | None = None
        self._status = status or CliStatus(found=True, path="claude", version="0.0.0-scripted", logged_in=True)

    def ready(self) -> None:
        if self.draining:
            raise ServiceUnavailableError("The proxy is shutting down.", retry_after=5)
        limited = account_limited_error(self.rate_limit)
        if limited is not None:
            raise limited

    async def run(self, request: ChatRequest, ticket: Ticket) -> AsyncGenerator[BackendItem, None]:
        ticket.taken = True
        try:
            self.requests.append(request)
            for item in self.script(request):
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            ticket.release()

    async def status(self, *, refresh: bool = False) -> CliStatus:
        return self._status

    def stats(self) -> BackendStats:
        return BackendStats(spawned=len(self.requests), rate_limit=self.rate_limit)

    def begin_drain(self, grace: float) -> None:
        self.draining = True

    async def aclose(self) -> None:
        return None
