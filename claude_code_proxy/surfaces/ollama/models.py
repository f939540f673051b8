"""Inbound Ollama API requests: ``/api/chat``, ``/api/generate``, ``/api/show``.

Unknown fields are accepted and ignored (future client fields must not break clients),
and so are the known ones that mean nothing without local weights (``keep_alive``,
``template``, ``context``, most ``options``).  Wire types that would silently coerce
(``stream: "yes"``, ``num_predict: "5"``) are strict, so a wrong type is a 400 that
names the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool, StrictInt

from claude_code_proxy.chat.wire import Inbound

# OpenAI's rule for function names, which Ollama's clients follow; the CLI accepts the same.
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class Options(Inbound):
    """Ollama's runtime ``options``: ``num_predict`` and ``stop`` act; ``temperature`` is
    type-checked but, like every other option, not forwarded (docs/compatibility.md)."""

    num_predict: StrictInt | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None


class FunctionCall(Inbound):
    name: str = Field(min_length=1)
    # Ollama sends an object; some clients send the OpenAI-style JSON text instead.
    arguments: dict[str, Any] | str | None = None


class ToolCall(Inbound):
    id: str | None = None
    function: FunctionCall


class Message(Inbound):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class FunctionDefinition(Inbound):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(Inbound):
    type: Literal["function"] = "function"
    function: FunctionDefinition


Format = Literal["", "json"] | dict[str, Any]


class Generation(Inbound):
    """What ``/api/chat`` and ``/api/generate`` share."""

    model: str = Field(min_length=1)
    stream: StrictBool | None = None
    format: Format | None = None
    options: Options | None = None
    # true/false or a level ("low", "medium", "high"), checked by the translator so that a
    # wrong value gets one clear message rather than one per union member.
    think: StrictBool | str | None = None
    keep_alive: str | float | None = None

    @property
    def streams(self) -> bool:
        return self.stream is not False  # Ollama streams unless told not to


class ChatBody(Generation):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None


class GenerateBody(Generation):
    prompt: str | None = ""
    suffix: str | None = None
    system: str | None = None
    raw: StrictBool | None = None
    images: list[str] | None = None


class ShowBody(Inbound):
    # ``name`` is the field's older spelling, still sent by some clients.
    model: str | None = None
    name: str | None = None
    verbose: StrictBool | None = None
