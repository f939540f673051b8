"""Running a backend to completion for a non-streaming answer, shared by both surfaces."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from claude_code_proxy.exceptions import ClaudeProxyError
from claude_code_proxy.models.chat import ChatRequest, Completion
from claude_code_proxy.services.claude_client import BackendItem
from claude_code_proxy.services.streaming import MessageAccumulator


def tool_names(chat: ChatRequest) -> dict[str, str]:
    """Upstream tool name -> the name the client declared."""
    return {tool.upstream_name: tool.name for tool in chat.tools}


async def collect_message(
    items: AsyncIterator[BackendItem], tool_names: dict[str, str]
) -> dict[str, Any]:
    """The whole answer as an Anthropic Message.

    ``items`` (a backend run) is closed before returning: its CLI has been killed by the
    time the client gets the answer (its directory is removed just after, off the path).
    """
    accumulator = MessageAccumulator(tool_names)
    try:
        async for item in items:
            if isinstance(item, Completion):
                return accumulator.finish(item)
            accumulator.feed(item)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    raise ClaudeProxyError("The Claude Code CLI ended without an answer.")
