"""The internal request both surfaces translate into, and the backend's events.

A ``ChatRequest`` is already in Anthropic wire form (what the model must see); the
Claude client turns it into CLI options and seeded history, nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClientTool:
    """A tool the client declared; the model may call it, nothing ever runs it."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass
class ChatRequest:
    model: str
    """The model the CLI is asked for (an alias or a full ``claude-*`` id)."""
    messages: list[dict[str, Any]]
    """Alternating Anthropic messages, first and last from the user."""
    max_tokens: int
    system: str | None = None
    stop_sequences: list[str] = field(default_factory=list)
    thinking: dict[str, Any] | None = None
    """``{"type": "enabled", "budget_tokens": N}``, ``{"type": "adaptive"}`` or None (off)."""
    tools: list[ClientTool] = field(default_factory=list)
    tool_choice: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    """A JSON schema the answer must follow (structured output)."""


@dataclass
class Completion:
    """The end of a successful run: what it cost and why it stopped."""

    stop_reason: str | None
    stop_sequence: str | None
    usage: dict[str, int]
    cost_usd: float | None = None
    model: str | None = None
