"""Inbound Anthropic Messages requests.

Unknown fields are accepted and ignored (future SDK fields must not break clients);
wire types that would silently coerce (``stream: "yes"``, ``max_tokens: "5"``) are
strict, so a wrong type is a 400 that names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt

from claude_code_proxy.chat.wire import Inbound as _Inbound
from claude_code_proxy.chat.wire import Thinking


class TextBlock(_Inbound):
    type: Literal["text"]
    text: str


class Base64ImageSource(_Inbound):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLImageSource(_Inbound):
    type: Literal["url"]
    url: str


class ImageBlock(_Inbound):
    type: Literal["image"]
    source: Annotated[Base64ImageSource | URLImageSource, Field(discriminator="type")]


class DocumentBlock(_Inbound):
    type: Literal["document"]
    source: dict[str, Any]


class ToolUseBlock(_Inbound):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Inbound):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: StrictBool | None = None


class ThinkingBlock(_Inbound):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Inbound):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(_Inbound):
    # "system": a mid-conversation system turn (Claude Code sends them on newer models);
    # the CLI cannot place one among the turns, so its text joins the system prompt.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class ToolParam(_Inbound):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoice(_Inbound):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: StrictBool | None = None


class MessagesRequest(_Inbound):
    model: str = Field(min_length=1)
    max_tokens: StrictInt = Field(ge=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: StrictBool = False
    # Accepted from older clients; the current Messages API has no such fields, so they
    # are never forwarded (see docs/compatibility.md).
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0)
    thinking: Thinking | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None
