"""The neutral request every surface translates into.

A ``ChatRequest`` is already in Anthropic wire form (what the model must see); the
backend turns it into CLI options and seeded history, nothing more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

CLIENT_SERVER = "client"
"""The in-process MCP server that carries client tools to the CLI."""
UPSTREAM_PREFIX = f"mcp__{CLIENT_SERVER}__"
STRUCTURED_OUTPUT_TOOL = "StructuredOutput"
"""The tool the CLI adds for ``--json-schema``; its input is the structured answer."""
_CLI_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True)
class ClientTool:
    """A tool the client declared; the model may call it, nothing ever runs it."""

    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def cli_name(self) -> str:
        """The name as the CLI registers it (it rewrites dots and other characters to ``_``)."""
        return _CLI_NAME_BAD.sub("_", self.name)

    @property
    def upstream_name(self) -> str:
        """The name the model sees and calls."""
        return UPSTREAM_PREFIX + self.cli_name

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema as the SDK needs it: an object schema with ``properties``."""
        schema = dict(self.input_schema)
        schema.setdefault("type", "object")
        if schema["type"] == "object":
            schema.setdefault("properties", {})
        return schema


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
