"""Inbound OpenAI Chat Completions requests.

Unknown fields are accepted and ignored (future SDK fields must not break clients), and
so are the known fields the proxy cannot honour (``presence_penalty``, ``seed``,
``logprobs``... see docs/compatibility.md), which are therefore not modelled at all.
Wire types that would silently coerce (``stream: "yes"``, ``max_tokens: "5"``) are
strict, so a wrong type is a 400 that names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt

from claude_code_proxy.chat.wire import Inbound as _Inbound
from claude_code_proxy.chat.wire import Thinking

# OpenAI's own rule for function names; the CLI and Anthropic accept the same set.
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


# -- content parts -------------------------------------------------------------------

class TextPart(_Inbound):
    type: Literal["text"]
    text: str


class ImageURL(_Inbound):
    url: str
    detail: str | None = None


class ImagePart(_Inbound):
    type: Literal["image_url"]
    image_url: ImageURL


class AudioPart(_Inbound):
    """Accepted and dropped: the model cannot hear."""

    type: Literal["input_audio"]


class FilePart(_Inbound):
    """Accepted and dropped (as Anthropic's own OpenAI layer does)."""

    type: Literal["file"]


class RefusalPart(_Inbound):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


# -- messages ------------------------------------------------------------------------

class FunctionCall(_Inbound):
    name: str
    arguments: str = ""


class ToolCall(_Inbound):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Inbound):
    role: Literal["system", "developer"]
    content: str | list[TextPart]


class UserMessage(_Inbound):
    role: Literal["user"]
    content: str | list[UserPart]


class AssistantMessage(_Inbound):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None


class ToolMessage(_Inbound):
    role: Literal["tool"]
    tool_call_id: str
    content: str | list[TextPart]


class FunctionMessage(_Inbound):
    """The legacy result of a ``function_call``; matched to it by name."""

    role: Literal["function"]
    name: str
    content: str | None = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


# -- tools and formats ---------------------------------------------------------------

class FunctionDefinition(_Inbound):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Inbound):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Inbound):
    name: str


class NamedToolChoice(_Inbound):
    type: Literal["function"]
    function: NamedFunction


class ResponseFormatText(_Inbound):
    type: Literal["text"]


class ResponseFormatJSONObject(_Inbound):
    type: Literal["json_object"]


class JSONSchema(_Inbound):
    name: str
    description: str | None = None
    # ``schema`` shadows a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormatJSONSchema(_Inbound):
    type: Literal["json_schema"]
    json_schema: JSONSchema


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class StreamOptions(_Inbound):
    include_usage: StrictBool | None = None


class ChatCompletionRequest(_Inbound):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: StrictInt | None = None
    # Accepted and range-checked as OpenAI does; the current Messages API has no such
    # fields, so they are never forwarded (see docs/compatibility.md).
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    reasoning_effort: ReasoningEffort | None = None
    # Anthropic's own OpenAI layer takes ``extra_body={"thinking": {...}}``; so do we.
    thinking: Thinking | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    response_format: ResponseFormat | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)
