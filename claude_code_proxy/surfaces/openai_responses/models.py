"""Inbound OpenAI Responses requests (``POST /openai/v1/responses``).

Unknown fields are accepted and ignored (future SDK fields must not break clients), and
so are the known fields the proxy cannot honour (``truncation``, ``service_tier``...,
see docs/compatibility.md).  Wire types that would silently coerce (``stream: "yes"``,
``max_output_tokens: "5"``) are strict, so a wrong type is a 400 that names the field.

Tools and input items of a type the proxy does not know (hosted tools, items a newer
client invents) are kept as ``OtherTool`` / ``OtherItem``: the translator drops them
with a log line instead of refusing the request, since Codex sends some by default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StrictBool, StrictInt, Tag

from claude_code_proxy.chat.wire import Inbound as _Inbound

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


def _tagged(known: frozenset[str], default: str | None = None) -> Any:
    """A discriminator on ``type`` that sends unknown types to ``other`` (and a missing
    type to ``default``, for the easy message form ``{"role", "content"}``)."""

    def pick(value: Any) -> str:
        kind = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)
        if kind is None and default is not None:
            kind = default
        return kind if kind in known else "other"

    return Discriminator(pick)


# -- content parts -------------------------------------------------------------------

class InputText(_Inbound):
    type: Literal["input_text"]
    text: str


class InputImage(_Inbound):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(_Inbound):
    """Accepted and dropped: files by id or data are not carried (docs/compatibility.md)."""

    type: Literal["input_file"]


class InputAudio(_Inbound):
    """Accepted and dropped: the model cannot hear."""

    type: Literal["input_audio"]


class OutputText(_Inbound):
    type: Literal["output_text"]
    text: str


class Refusal(_Inbound):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    InputText | InputImage | InputFile | InputAudio | OutputText | Refusal, Field(discriminator="type")
]
OutputPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]


# -- input items ---------------------------------------------------------------------

class Message(_Inbound):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None


class FunctionCall(_Inbound):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str = ""
    namespace: str | None = None
    id: str | None = None


class FunctionCallOutput(_Inbound):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[OutputPart]


class CustomToolCall(_Inbound):
    type: Literal["custom_tool_call"]
    call_id: str = Field(min_length=1)
    name: str
    input: str
    namespace: str | None = None
    id: str | None = None


class CustomToolCallOutput(_Inbound):
    type: Literal["custom_tool_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[OutputPart]


class ShellAction(_Inbound):
    type: Literal["exec"] = "exec"
    command: list[str]
    env: dict[str, str] | None = None
    timeout_ms: StrictInt | None = None
    user: str | None = None
    working_directory: str | None = None


class LocalShellCall(_Inbound):
    type: Literal["local_shell_call"]
    call_id: str = Field(min_length=1)
    action: ShellAction
    id: str | None = None


class LocalShellCallOutput(_Inbound):
    """OpenAI names the call by ``id``; some clients send ``call_id``."""

    type: Literal["local_shell_call_output"]
    id: str | None = None
    call_id: str | None = None
    output: str

    @property
    def target(self) -> str:
        return self.call_id or self.id or ""


class SummaryText(_Inbound):
    type: Literal["summary_text"] = "summary_text"
    text: str


class Reasoning(_Inbound):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    encrypted_content: str | None = None


class OtherItem(_Inbound):
    """An item type this proxy does not carry (``item_reference``, hosted tool calls...)."""

    type: str


_ITEM_TYPES = frozenset({
    "message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
    "local_shell_call", "local_shell_call_output", "reasoning",
})
InputItem = Annotated[
    Annotated[Message, Tag("message")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[CustomToolCall, Tag("custom_tool_call")]
    | Annotated[CustomToolCallOutput, Tag("custom_tool_call_output")]
    | Annotated[LocalShellCall, Tag("local_shell_call")]
    | Annotated[LocalShellCallOutput, Tag("local_shell_call_output")]
    | Annotated[Reasoning, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    _tagged(_ITEM_TYPES, default="message"),
]


# -- tools ---------------------------------------------------------------------------

# OpenAI's own rule for function names; the CLI and Anthropic accept the same set.
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionTool(_Inbound):
    type: Literal["function"]
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class CustomTool(_Inbound):
    """A free-form tool (Codex's ``apply_patch``): the model writes plain text as its input."""

    type: Literal["custom"]
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    format: dict[str, Any] | None = None


class LocalShellTool(_Inbound):
    type: Literal["local_shell"]


class NamespaceTool(_Inbound):
    """A group of function tools (Codex's sub-agent tools); calls name their namespace."""

    type: Literal["namespace"]
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    tools: list[FunctionTool | CustomTool] = Field(default_factory=list)


class OtherTool(_Inbound):
    """A hosted tool (``web_search``, ``file_search``...) or one this proxy does not know."""

    type: str


_TOOL_TYPES = frozenset({"function", "custom", "local_shell", "namespace"})
Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[CustomTool, Tag("custom")]
    | Annotated[LocalShellTool, Tag("local_shell")]
    | Annotated[NamespaceTool, Tag("namespace")]
    | Annotated[OtherTool, Tag("other")],
    _tagged(_TOOL_TYPES),
]


class NamedToolChoice(_Inbound):
    type: Literal["function", "custom"]
    name: str


class HostedToolChoice(_Inbound):
    """``{"type": "web_search_preview"}``, ``{"type": "allowed_tools", ...}``...: treated as auto."""

    type: str


# -- text format and reasoning -------------------------------------------------------

class FormatText(_Inbound):
    type: Literal["text"]


class FormatJSONObject(_Inbound):
    type: Literal["json_object"]


class FormatJSONSchema(_Inbound):
    type: Literal["json_schema"]
    name: str = Field(min_length=1)
    # ``schema`` shadows a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: StrictBool | None = None


TextFormat = Annotated[FormatText | FormatJSONObject | FormatJSONSchema, Field(discriminator="type")]


class TextConfig(_Inbound):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_Inbound):
    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None

    @property
    def wants_summary(self) -> bool:
        return (self.summary or self.generate_summary) is not None


# -- the request ---------------------------------------------------------------------

class ResponsesRequest(_Inbound):
    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: StrictBool | None = None
    store: StrictBool | None = None
    background: StrictBool | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | HostedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    max_output_tokens: StrictInt | None = Field(None, ge=1)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None
    stop: str | list[str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    # Accepted and range-checked as OpenAI does; the current Messages API has no such
    # fields, so they are never forwarded (see docs/compatibility.md).
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)

    @property
    def wants_encrypted_reasoning(self) -> bool:
        return "reasoning.encrypted_content" in (self.include or [])
