"""Pure translation for the Anthropic surface.

- ``from_anthropic``: a Messages request -> the neutral ``ChatRequest`` (model resolved).
- ``to_message``: the neutral ``Answer`` -> an Anthropic ``Message``.

No I/O, no settings, no logging.  Intentional divergences (docs/compatibility.md): a
trailing assistant prefill is dropped; ``temperature``/``top_p``/``top_k`` are accepted
but not forwarded.
"""

from __future__ import annotations

from typing import Any

from claude_code_proxy.chat.answer import Answer
from claude_code_proxy.chat.content import (
    check_base64_image,
    check_image_url,
    check_strings,
    check_text,
    check_tool_choice,
    check_tools,
    clean_stop_sequences,
    finish_conversation,
    merge_turns,
    sanitize_tool_id,
    thinking_options,
)
from claude_code_proxy.chat.request import ChatRequest, ClientTool
from claude_code_proxy.exceptions import InvalidRequestError
from claude_code_proxy.surfaces.anthropic.models import MessagesRequest


def _block(block: Any, param: str) -> dict[str, Any] | None:
    """One inbound content block in the exact wire form upstream accepts (or None to drop)."""
    kind = block.type
    if kind == "text":
        if not block.text.strip():
            return None
        out: dict[str, Any] = {"type": "text", "text": block.text}
    elif kind == "image":
        source = block.source
        if source.type == "base64":
            check_base64_image(source.data, param)
            out = {"type": "image", "source": {"type": "base64", "media_type": source.media_type, "data": source.data}}
        else:
            check_image_url(source.url, param)
            out = {"type": "image", "source": {"type": "url", "url": source.url}}
    elif kind == "document":
        if block.source.get("type") == "url":
            check_image_url(str(block.source.get("url", "")), param)
        out = {"type": "document", "source": block.source}
    elif kind == "tool_use":
        out = {"type": "tool_use", "id": sanitize_tool_id(block.id), "name": block.name, "input": block.input}
    elif kind == "tool_result":
        out = {"type": "tool_result", "tool_use_id": sanitize_tool_id(block.tool_use_id)}
        if isinstance(block.content, str):
            out["content"] = block.content
        elif block.content:
            out["content"] = [b for b in (_block(c, param) for c in block.content) if b is not None]
        if block.is_error:
            out["is_error"] = True
    elif kind == "thinking":
        out = {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    else:  # redacted_thinking
        out = {"type": "redacted_thinking", "data": block.data}
    cache_control = (block.model_extra or {}).get("cache_control")
    if isinstance(cache_control, dict):
        out["cache_control"] = cache_control
    return out




def system_turn_text(content: Any, param: str) -> str:
    """The text of a ``role: "system"`` turn: a string or text blocks (anything else is refused)."""
    if isinstance(content, str):
        check_text(content, param)
        return content
    texts = []
    for block in content:
        if block.type != "text":
            raise InvalidRequestError("A system turn may only contain text blocks.", param=param)
        check_text(block.text, param)
        texts.append(block.text)
    return "\n".join(text for text in texts if text.strip())


def from_anthropic(request: MessagesRequest, model: str) -> ChatRequest:
    """An Anthropic Messages request as the internal request (model already resolved).

    Mid-conversation system turns are hoisted into the system prompt, in order, after the
    top-level ``system`` (the CLI can only seed user and assistant turns; documented).
    """
    turns: list[dict[str, Any]] = []
    system_turns: list[str] = []
    for i, message in enumerate(request.messages):
        param = f"messages.{i}.content"
        if message.role == "system":
            text = system_turn_text(message.content, param)
            if text.strip():  # an empty one only carries per-turn settings (output_config)
                system_turns.append(text)
            continue
        blocks: list[Any]
        if isinstance(message.content, str):
            check_text(message.content, param)
            blocks = [{"type": "text", "text": message.content}] if message.content.strip() else []
        else:
            blocks = [b for b in (_block(block, param) for block in message.content) if b is not None]
            check_strings(blocks, param)
        turns.append({"role": message.role, "content": blocks})
    system: str | None
    if isinstance(request.system, list):
        system = "\n".join(block.text for block in request.system if block.text)
    else:
        system = request.system
    if system is not None:
        check_text(system, "system")
    if system_turns:
        system = "\n".join([system, *system_turns] if system else system_turns)
    tools = [
        ClientTool(name=t.name, description=t.description or "", input_schema=t.input_schema)
        for t in request.tools or []
    ]
    check_tools([(f"tools.{i}.name", tool) for i, tool in enumerate(tools)])
    tool_choice = request.tool_choice.model_dump(exclude_none=True) if request.tool_choice else None
    if request.tool_choice is not None:
        check_tool_choice(request.tool_choice.type, request.tool_choice.name, tools, "tool_choice")
    return ChatRequest(
        model=model,
        messages=finish_conversation(merge_turns(turns)),
        max_tokens=request.max_tokens,
        system=system or None,
        stop_sequences=clean_stop_sequences(request.stop_sequences),
        thinking=thinking_options(request.thinking, request.max_tokens),
        tools=tools,
        tool_choice=tool_choice,
    )


def to_message(answer: Answer) -> dict[str, Any]:
    return {
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": answer.content,
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": dict(answer.usage),
    }


# Fields and shapes only OpenAI's Chat Completions format has: a body with any of them that
# fails validation here was almost certainly meant for the OpenAI surface.
_OPENAI_ONLY_FIELDS = frozenset({
    "n", "response_format", "max_completion_tokens", "stream_options", "frequency_penalty",
    "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "functions", "function_call",
    "parallel_tool_calls", "reasoning_effort", "user",
})
_OPENAI_ONLY_ROLES = frozenset({"system", "developer", "tool", "function"})


def openai_shape_hint(body: dict[str, Any]) -> str | None:
    """A pointer to ``/openai/v1`` for an OpenAI-format body sent to this surface, else None."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        messages = []
    tells = [f"`{name}`" for name in sorted(_OPENAI_ONLY_FIELDS & body.keys())]
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") in _OPENAI_ONLY_ROLES:
            tells.append(f"a `{message['role']}` message")
        if "tool_calls" in message:
            tells.append("`tool_calls`")
        content = message.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            tells.append("`image_url` content")
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "function" in t for t in tools):
        tells.append("OpenAI-style `tools`")
    if "max_tokens" not in body and tells:
        tells.append("no `max_tokens`")
    if not tells:
        return None
    return (
        f"This looks like an OpenAI Chat Completions body ({', '.join(dict.fromkeys(tells))}); this path "
        "speaks the Anthropic Messages format. OpenAI clients use the base URL "
        "http://<host>:<port>/openai/v1 (POST /openai/v1/chat/completions)."
    )
