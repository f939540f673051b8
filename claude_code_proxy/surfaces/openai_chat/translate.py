"""Pure translation between the OpenAI Chat Completions surface and the internal forms.

- ``from_openai``: an OpenAI request -> ``ChatRequest`` (Anthropic wire form).
- ``to_chat_completion``: the neutral ``Answer`` a run produced -> ``chat.completion``.

No I/O, no settings, no logging (the caller passes the default ``max_tokens``, the
response id and the timestamp).  Field by field: ../shared translation reference and
docs/compatibility.md.  Intentional divergences, each documented there:

- every ``system``/``developer`` message is hoisted into the system prompt, wherever it
  stands (Anthropic's own OpenAI layer does the same);
- thinking is switched off when it cannot be honoured: a tool is forced, or the client
  replays a tool call, since plain OpenAI clients cannot send signed thinking blocks back;
- ``temperature``/``top_p`` are checked but not forwarded (the Messages API has none).
"""

from __future__ import annotations

import json
from typing import Any

from claude_code_proxy.chat.answer import Answer
from claude_code_proxy.chat.content import (
    check_output_schema,
    check_strings,
    check_text,
    check_tool_choice,
    check_tools,
    clean_stop_sequences,
    effort_thinking,
    finish_conversation,
    image_from_url,
    merge_turns,
    sanitize_tool_id,
    text_blocks,
    thinking_options,
    tool_arguments,
)
from claude_code_proxy.chat.request import ChatRequest, ClientTool
from claude_code_proxy.exceptions import InvalidRequestError
from claude_code_proxy.surfaces.openai_chat.models import (
    AssistantMessage,
    ChatCompletionRequest,
    FunctionDefinition,
    FunctionMessage,
    NamedFunction,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "compaction": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


# -- request -------------------------------------------------------------------------

def from_openai(request: ChatCompletionRequest, model: str, default_max_tokens: int) -> ChatRequest:
    """An OpenAI chat request as the internal request (model already resolved)."""
    if request.n is not None and request.n != 1:
        raise InvalidRequestError("n must be 1: this proxy returns exactly one choice.", param="n")
    system, turns = translate_messages(request)
    tools = client_tools(request)
    tool_choice = translate_tool_choice(request, tools)
    explicit = request.max_completion_tokens or request.max_tokens
    max_tokens, thinking = max_tokens_and_thinking(request, explicit, default_max_tokens)
    messages = finish_conversation(merge_turns(turns))
    if thinking is not None and (_forces_tool(tool_choice) or _replays_tool_call(messages)):
        thinking = None
    stops = [request.stop] if isinstance(request.stop, str) else request.stop
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        system=system,
        stop_sequences=clean_stop_sequences(stops),
        thinking=thinking,
        tools=tools,
        tool_choice=tool_choice,
        output_schema=output_schema(request),
    )


def max_tokens_and_thinking(
    request: ChatCompletionRequest, explicit: int | None, default_max_tokens: int
) -> tuple[int, dict[str, Any] | None]:
    """``(max_tokens, thinking)``: the thinking budget always stays below max_tokens."""
    if request.thinking is not None:
        max_tokens = explicit or default_max_tokens
        if explicit is None and request.thinking.type == "enabled":
            max_tokens = max(max_tokens, request.thinking.budget_tokens + default_max_tokens)
        return max_tokens, thinking_options(request.thinking, max_tokens)
    return effort_thinking(request.reasoning_effort, explicit, default_max_tokens)


def translate_messages(request: ChatCompletionRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """The hoisted system prompt, and the turns in Anthropic form (not yet merged)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    pending_functions: dict[str, list[str]] = {}  # legacy function_call name -> ids awaiting results
    for i, message in enumerate(request.messages):
        param = f"messages.{i}"
        if isinstance(message, SystemMessage):
            text = _text(message.content)
            check_text(text, f"{param}.content")
            if text.strip():
                system.append(text)
        elif isinstance(message, UserMessage):
            turns.append({"role": "user", "content": user_blocks(message, param)})
        elif isinstance(message, AssistantMessage):
            turns.append({"role": "assistant", "content": assistant_blocks(message, i, pending_functions)})
        elif isinstance(message, ToolMessage):
            turns.append({"role": "user", "content": [tool_result(message.tool_call_id, _text(message.content))]})
        elif isinstance(message, FunctionMessage):
            ids = pending_functions.get(message.name)
            if not ids:
                raise InvalidRequestError(
                    f"No earlier function_call named {message.name!r} for this function message.", param=param
                )
            turns.append({"role": "user", "content": [tool_result(ids.pop(0), message.content or "")]})
    for turn in turns:
        check_strings(turn["content"], "messages")
    return "\n".join(system) or None, turns


def user_blocks(message: UserMessage, param: str) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return text_blocks(message.content, f"{param}.content")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(message.content):
        part_param = f"{param}.content.{j}"
        if part.type == "text":
            blocks.extend(text_blocks(part.text, part_param))
        elif part.type == "image_url":
            blocks.append(image_from_url(part.image_url.url, f"{part_param}.image_url.url"))
        # input_audio and file parts are accepted and dropped (docs/compatibility.md).
    return blocks


def assistant_blocks(
    message: AssistantMessage, index: int, pending_functions: dict[str, list[str]]
) -> list[dict[str, Any]]:
    param = f"messages.{index}"
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        blocks.extend(text_blocks(message.content, f"{param}.content"))
    elif message.content:
        for j, part in enumerate(message.content):
            if part.type == "text":  # refusal parts are dropped, as OpenAI's own replay does
                blocks.extend(text_blocks(part.text, f"{param}.content.{j}"))
    for j, call in enumerate(message.tool_calls or []):
        arguments = tool_arguments(call.function.arguments, f"{param}.tool_calls.{j}.function.arguments")
        blocks.append({"type": "tool_use", "id": sanitize_tool_id(call.id), "name": call.function.name,
                       "input": arguments})
    if message.function_call is not None:
        call_id = f"call_{sanitize_tool_id(message.function_call.name)}_{index}"
        pending_functions.setdefault(message.function_call.name, []).append(call_id)
        arguments = tool_arguments(message.function_call.arguments, f"{param}.function_call.arguments")
        blocks.append({"type": "tool_use", "id": call_id, "name": message.function_call.name, "input": arguments})
    return blocks


def tool_result(call_id: str, content: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": sanitize_tool_id(call_id)}
    if content.strip():
        block["content"] = content
    return block


def client_tools(request: ChatCompletionRequest) -> list[ClientTool]:
    declared: list[tuple[str, FunctionDefinition]] = [
        (f"tools.{i}.function.name", tool.function) for i, tool in enumerate(request.tools or [])]
    declared += [(f"functions.{i}.name", definition) for i, definition in enumerate(request.functions or [])]
    # ``strict`` is not forwarded: the schema itself is what the model sees.
    tools = [(param, ClientTool(
        name=definition.name,
        description=definition.description or "",
        input_schema=definition.parameters if definition.parameters is not None else dict(EMPTY_SCHEMA),
    )) for param, definition in declared]
    check_tools(tools)
    return [tool for _, tool in tools]


def translate_tool_choice(request: ChatCompletionRequest, tools: list[ClientTool]) -> dict[str, Any] | None:
    """``tool_choice``/``parallel_tool_calls`` (or legacy ``function_call``) as Anthropic's."""
    choice = request.tool_choice if request.tool_choice is not None else request.function_call
    param = "tool_choice" if request.tool_choice is not None else "function_call"
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif isinstance(choice, str):
        out = {"type": {"auto": "auto", "none": "none", "required": "any"}[choice]}
    else:
        name = choice.name if isinstance(choice, NamedFunction) else choice.function.name
        out = {"type": "tool", "name": name}
    if out is not None:
        check_tool_choice(out["type"], out.get("name"), tools, param)
    if not tools:
        return None  # "auto" or "none" among no tools means nothing (some clients always send "none")
    if request.parallel_tool_calls is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def output_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    schema = response_format.json_schema.schema_ or {"type": "object"}
    check_output_schema(schema, "response_format.json_schema.schema")
    return schema


def _forces_tool(tool_choice: dict[str, Any] | None) -> bool:
    return tool_choice is not None and tool_choice["type"] in ("any", "tool")


def _replays_tool_call(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn called a tool: upstream would want its signed thinking back."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            return any(block["type"] == "tool_use" for block in message["content"])
    return False


def _text(content: str | list[TextPart]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)






# -- response ------------------------------------------------------------------------

def finish_reason(stop_reason: str | None, has_tool_calls: bool) -> str:
    reason = FINISH_REASONS.get(stop_reason or "", "stop")
    if has_tool_calls and reason == "stop":
        return "tool_calls"  # derived from the calls themselves (LiteLLM bugs 3-5)
    if not has_tool_calls and reason == "tool_calls":
        return "stop"
    return reason


def usage(anthropic_usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's prompt_tokens include cached tokens; Anthropic's input_tokens do not."""
    cache_read = int(anthropic_usage.get("cache_read_input_tokens") or 0)
    prompt = (
        int(anthropic_usage.get("input_tokens") or 0)
        + int(anthropic_usage.get("cache_creation_input_tokens") or 0)
        + cache_read
    )
    completion = int(anthropic_usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def tool_call(block: dict[str, Any], partial_arguments: str | None = None) -> dict[str, Any]:
    """A tool_use block as a tool call; arguments cut off by max_tokens stay as the model
    wrote them, exactly as the stream carried them."""
    arguments = partial_arguments if partial_arguments is not None else json.dumps(
        block.get("input") or {}, ensure_ascii=False)
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def to_chat_completion(answer: Answer, *, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """The neutral answer (tool names already restored) as a ``chat.completion``."""
    content = answer.content
    text = "".join(block.get("text", "") for block in content if block.get("type") == "text")
    reasoning = "".join(block.get("thinking", "") for block in content if block.get("type") == "thinking")
    calls = [tool_call(block, answer.partial_tool_input.get(block["id"]))
             for block in content if block.get("type") == "tool_use"]
    reply: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    if reasoning:
        reply["reasoning_content"] = reasoning  # never in ``content``; a common extension field
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": None,
            "finish_reason": finish_reason(answer.stop_reason, bool(calls)),
        }],
        "usage": usage(answer.usage),
    }
