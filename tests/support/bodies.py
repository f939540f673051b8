"""Reading upstream request bodies the way the model sees the client's conversation."""

from __future__ import annotations

from typing import Any


def client_turns(body: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Upstream messages without the CLI's own notes and reminders: (role, blocks) per turn."""
    turns = []
    for message in body["messages"]:
        if message["role"] == "system":  # the CLI's environment notes on newer models
            continue
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        blocks = [b for b in blocks
                  if not (b.get("type") == "text" and b["text"].lstrip().startswith("<system-reminder>"))]
        blocks = [{k: v for k, v in b.items() if k != "cache_control"} for b in blocks]
        turns.append((message["role"], blocks))
    return turns


def texts(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, concatenated text) per client turn."""
    return [(role, "".join(b.get("text", "") for b in blocks)) for role, blocks in client_turns(body)]
