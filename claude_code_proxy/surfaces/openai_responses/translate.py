"""Pure translation between the OpenAI Responses surface and the neutral forms.

- ``from_responses``: a Responses request (plus the stored items of the response it
  continues) -> the neutral ``ChatRequest``, and the ``ResponseFrame`` the answer is
  rendered in (render.py: the neutral ``Answer`` -> a ``response`` object).

No I/O, no settings, no logging.  Intentional divergences (docs/compatibility.md):

- ``instructions`` and every ``system``/``developer`` message become the system prompt, in
  order, wherever the messages stand;
- hosted tools (``web_search``, ``file_search``...) and unknown tool or item types are
  dropped (the route logs them), since Codex sends some of them by default;
- a custom (free-form) tool reaches the model as a tool taking one string, ``input``;
  ``local_shell`` as a tool taking the exec action; both come back in their own item types;
- signed thinking round-trips through ``encrypted_content`` (an opaque blob holding the
  thinking and its signature); thinking is switched off when the client replays a tool
  call without it, or forces a tool;
- ``temperature``/``top_p``/``truncation``/``service_tier`` are accepted, not forwarded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from claude_code_proxy.chat.content import (
    check_output_schema,
    check_strings,
    check_text,
    clean_stop_sequences,
    effort_thinking,
    finish_conversation,
    image_from_url,
    merge_turns,
    sanitize_tool_id,
    text_blocks,
    tool_arguments,
)
from claude_code_proxy.chat.request import ChatRequest, ClientTool
from claude_code_proxy.exceptions import InvalidRequestError
from claude_code_proxy.surfaces.openai_responses.models import (
    ContentPart,
    CustomTool,
    CustomToolCall,
    CustomToolCallOutput,
    FormatJSONSchema,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    InputImage,
    InputItem,
    InputText,
    LocalShellCall,
    LocalShellCallOutput,
    LocalShellTool,
    Message,
    NamedToolChoice,
    NamespaceTool,
    OtherItem,
    OutputPart,
    OutputText,
    Reasoning,
    ResponsesRequest,
)
from claude_code_proxy.surfaces.openai_responses.render import ResponseFrame, ToolSpec, decode_reasoning

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
CUSTOM_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's whole input, as plain text."}},
    "required": ["input"],
}
LOCAL_SHELL = "local_shell"
LOCAL_SHELL_DESCRIPTION = (
    "Run a command on the user's machine and see its output. `command` is the argument vector "
    "(for a shell pipeline use [\"bash\", \"-lc\", \"...\"])."
)
LOCAL_SHELL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "description": "The argument vector."},
        "working_directory": {"type": "string"},
        "timeout_ms": {"type": "integer"},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["command"],
}
# Request fields echoed on the response object as the client sent them.
ECHOED = ("instructions", "max_output_tokens", "previous_response_id", "prompt_cache_key", "service_tier",
          "truncation", "user")


@dataclass
class Translation:
    chat: ChatRequest
    frame: ResponseFrame
    dropped_tools: list[str]
    dropped_items: list[str]


# -- request -------------------------------------------------------------------------

def from_responses(
    request: ResponsesRequest,
    model: str,
    default_max_tokens: int,
    *,
    response_id: str,
    created_at: int,
    history: list[InputItem] | None = None,
) -> Translation:
    """A Responses request as the neutral request; ``history`` is the stored input and
    output of the response named by ``previous_response_id``."""
    if request.background:
        raise InvalidRequestError("Background responses are not supported by this proxy.", param="background")
    items = current_items(request)
    if not items:
        raise InvalidRequestError("input must contain at least one item.", param="input")
    tools, specs, dropped_tools = client_tools(request)
    system, turns, dropped_items = translate_items([*(history or []), *items], specs)
    if request.instructions is not None:
        check_text(request.instructions, "instructions")
        if request.instructions.strip():
            system.insert(0, request.instructions)
    try:
        messages = finish_conversation(merge_turns(turns))
    except InvalidRequestError:
        raise InvalidRequestError("input must contain at least one non-empty user message.", param="input") from None
    choice = tool_choice(request, set(specs))
    effort = request.reasoning.effort if request.reasoning else None
    max_tokens, thinking = effort_thinking(effort, request.max_output_tokens, default_max_tokens)
    if thinking is not None and (_forces_tool(choice) or _replays_unsigned_tool_call(messages)):
        thinking = None
    stops = [request.stop] if isinstance(request.stop, str) else request.stop
    chat = ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        system="\n".join(system) or None,
        stop_sequences=clean_stop_sequences(stops),
        thinking=thinking,
        tools=tools,
        tool_choice=choice,
        output_schema=output_schema(request),
    )
    frame = ResponseFrame(
        id=response_id,
        created_at=created_at,
        model=request.model,
        tools=specs,
        summary=bool(request.reasoning and request.reasoning.wants_summary),
        encrypted=request.wants_encrypted_reasoning,
        echo=echo(request),
    )
    return Translation(chat, frame, dropped_tools, dropped_items)


def current_items(request: ResponsesRequest) -> list[InputItem]:
    """This request's own input as items (a string is one user message)."""
    if request.input is None:
        return []
    if isinstance(request.input, str):
        return [Message(role="user", content=request.input)]
    return list(request.input)


def client_tools(request: ResponsesRequest) -> tuple[list[ClientTool], dict[str, ToolSpec], list[str]]:
    """The tools the model may call, how each is shown back, and the dropped tool types."""
    tools: dict[str, ClientTool] = {}
    specs: dict[str, ToolSpec] = {}
    dropped: list[str] = []

    def add(tool: FunctionTool | CustomTool, namespace: str | None = None) -> None:
        name = f"{namespace}.{tool.name}" if namespace else tool.name
        if isinstance(tool, CustomTool):
            description = tool.description or ""
            tools[name] = ClientTool(name, description, dict(CUSTOM_TOOL_SCHEMA))
            specs[name] = ToolSpec("custom", tool.name, namespace)
        else:
            # ``strict`` is not forwarded: the schema itself is what the model sees.
            schema = tool.parameters if tool.parameters is not None else dict(EMPTY_SCHEMA)
            tools[name] = ClientTool(name, tool.description or "", schema)
            specs[name] = ToolSpec("function", tool.name, namespace)

    for tool in request.tools or []:
        if isinstance(tool, FunctionTool | CustomTool):
            add(tool)
        elif isinstance(tool, NamespaceTool):
            for inner in tool.tools:
                add(inner, tool.name)
        elif isinstance(tool, LocalShellTool):
            tools[LOCAL_SHELL] = ClientTool(LOCAL_SHELL, LOCAL_SHELL_DESCRIPTION, dict(LOCAL_SHELL_SCHEMA))
            specs[LOCAL_SHELL] = ToolSpec("local_shell", LOCAL_SHELL)
        else:
            dropped.append(tool.type)
    return list(tools.values()), specs, dropped


def translate_items(
    items: list[InputItem], specs: dict[str, ToolSpec]
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """(system prompt parts, turns in Anthropic form not yet merged, dropped item types)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    dropped: list[str] = []
    for i, item in enumerate(items):
        param = f"input.{i}"
        if isinstance(item, Message):
            if item.role in ("system", "developer"):
                text = _plain_text(item.content)
                check_text(text, f"{param}.content")
                if text.strip():
                    system.append(text)
            else:
                role = "assistant" if item.role == "assistant" else "user"
                turns.append({"role": role, "content": message_blocks(item.content, f"{param}.content")})
        elif isinstance(item, FunctionCall):
            name = f"{item.namespace}.{item.name}" if item.namespace else item.name
            turns.append(_call(item.call_id, name, tool_arguments(item.arguments, f"{param}.arguments")))
        elif isinstance(item, CustomToolCall):
            name = f"{item.namespace}.{item.name}" if item.namespace else item.name
            turns.append(_call(item.call_id, name, {"input": item.input}))
        elif isinstance(item, LocalShellCall):
            action = item.action.model_dump(exclude_none=True, exclude={"type"})
            turns.append(_call(item.call_id, LOCAL_SHELL, action))
        elif isinstance(item, FunctionCallOutput | CustomToolCallOutput):
            turns.append(_result(item.call_id, item.output, f"{param}.output"))
        elif isinstance(item, LocalShellCallOutput):
            if not item.target:
                raise InvalidRequestError("local_shell_call_output needs the call's id.", param=f"{param}.id")
            turns.append(_result(item.target, item.output, f"{param}.output"))
        elif isinstance(item, Reasoning):
            block = decode_reasoning(item.encrypted_content)
            if block is not None:  # another provider's reasoning cannot be replayed here
                turns.append({"role": "assistant", "content": [block]})
        elif isinstance(item, OtherItem):
            dropped.append(item.type)
    for turn in turns:
        check_strings(turn["content"], "input")
    return system, turns, dropped


def message_blocks(content: str | Sequence[ContentPart | OutputPart], param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return text_blocks(content, param)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        part_param = f"{param}.{j}"
        if isinstance(part, InputText | OutputText):
            blocks.extend(text_blocks(part.text, f"{part_param}.text"))
        elif isinstance(part, InputImage):
            if not part.image_url:
                raise InvalidRequestError("Images must be given by image_url (file ids are not supported).",
                                          param=f"{part_param}.image_url")
            blocks.append(image_from_url(part.image_url, f"{part_param}.image_url"))
        # input_file, input_audio and refusal parts are accepted and dropped
        # (docs/compatibility.md); a refusal is not replayed, as OpenAI's own replay does.
    return blocks


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": [
        {"type": "tool_use", "id": sanitize_tool_id(call_id), "name": name, "input": arguments}]}


def _result(call_id: str, output: str | list[OutputPart], param: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": sanitize_tool_id(call_id)}
    if isinstance(output, str):
        if output.strip():
            check_text(output, param)
            block["content"] = output
    else:
        content = message_blocks(output, param)
        if content:
            block["content"] = content
    return {"role": "user", "content": [block]}


def tool_choice(request: ResponsesRequest, names: set[str]) -> dict[str, Any] | None:
    """``tool_choice``/``parallel_tool_calls`` as Anthropic's."""
    if not names:
        return None  # a choice among no tools means nothing
    choice = request.tool_choice
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif isinstance(choice, str):
        out = {"type": {"auto": "auto", "none": "none", "required": "any"}[choice]}
    elif isinstance(choice, NamedToolChoice):
        if choice.name not in names:
            raise InvalidRequestError(f"tool_choice names {choice.name!r}, which is not among the tools.",
                                      param="tool_choice")
        out = {"type": "tool", "name": choice.name}
    else:
        out = None  # a hosted tool or an allowed_tools list: the model chooses
    if request.parallel_tool_calls is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def output_schema(request: ResponsesRequest) -> dict[str, Any] | None:
    fmt = request.text.format if request.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    assert isinstance(fmt, FormatJSONSchema)
    check_output_schema(fmt.schema_, "text.format.schema")
    return fmt.schema_


def echo(request: ResponsesRequest) -> dict[str, Any]:
    """The request's settings as the response object repeats them."""
    out: dict[str, Any] = {name: getattr(request, name) for name in ECHOED}
    out["tools"] = [tool.model_dump(by_alias=True, exclude_none=True) for tool in request.tools or []]
    choice = request.tool_choice
    out["tool_choice"] = choice.model_dump(exclude_none=True) if choice is not None and not isinstance(
        choice, str) else (choice or "auto")
    out["parallel_tool_calls"] = request.parallel_tool_calls is not False
    out["temperature"] = 1.0 if request.temperature is None else request.temperature
    out["top_p"] = 1.0 if request.top_p is None else request.top_p
    out["metadata"] = request.metadata or {}
    out["store"] = request.store is not False
    out["reasoning"] = {"effort": request.reasoning.effort if request.reasoning else None,
                        "summary": request.reasoning.summary if request.reasoning else None}
    text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else {}
    out["text"] = {"format": {"type": "text"}, **text}
    return out


def _forces_tool(choice: dict[str, Any] | None) -> bool:
    return choice is not None and choice["type"] in ("any", "tool")


def _replays_unsigned_tool_call(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn called a tool without its signed thinking: upstream refuses
    thinking then, so it is switched off for this request."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            content = message["content"]
            calls = any(block["type"] == "tool_use" for block in content)
            return calls and content[0]["type"] not in ("thinking", "redacted_thinking")
    return False


def _plain_text(content: str | list[ContentPart]) -> str:
    if isinstance(content, str):
        return content
    return "".join(getattr(part, "text", "") for part in content)



