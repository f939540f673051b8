"""Pure rendering for the Responses surface: the neutral ``Answer`` -> output items and the
``response`` object, and the reasoning blob that carries signed thinking to the client and back.

No I/O, no settings, no logging (the caller passes ids and timestamps).  Each answer block is
one output item: thinking -> ``reasoning``, text -> ``message``, a tool call -> the item its
tool's kind calls for (``function_call``, ``custom_tool_call``, ``local_shell_call``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from claude_code_proxy.chat.answer import Answer

INCOMPLETE_REASONS = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "compaction": "max_output_tokens",
    "refusal": "content_filter",
}
_REASONING_BLOB = "ccp1."  # the prefix of our encrypted_content, so another provider's blob is told apart


# -- what the answer needs -----------------------------------------------------------

@dataclass(frozen=True)
class ToolSpec:
    """How a tool the model calls is shown to the client."""

    kind: Literal["function", "custom", "local_shell"]
    name: str
    namespace: str | None = None


@dataclass
class ResponseFrame:
    """Everything about a response that is known before the model answers."""

    id: str
    created_at: int
    model: str
    """The model name as the client sent it."""
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    """By the ``ClientTool`` name the neutral answer carries."""
    summary: bool = False
    encrypted: bool = False
    echo: dict[str, Any] = field(default_factory=dict)


# -- reasoning round trip ------------------------------------------------------------

def encode_reasoning(block: dict[str, Any]) -> str:
    """A thinking block as an opaque ``encrypted_content`` the client hands back unchanged."""
    if block.get("type") == "redacted_thinking":
        payload = {"redacted": block.get("data", "")}
    else:
        payload = {"thinking": block.get("thinking", ""), "signature": block.get("signature", "")}
    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return _REASONING_BLOB + base64.urlsafe_b64encode(raw).decode()


def decode_reasoning(blob: str | None) -> dict[str, Any] | None:
    """The thinking block inside our ``encrypted_content``; None for anything else."""
    if not blob or not blob.startswith(_REASONING_BLOB):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(blob[len(_REASONING_BLOB):].encode()))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("redacted"), str):
        return {"type": "redacted_thinking", "data": payload["redacted"]}
    thinking, signature = payload.get("thinking"), payload.get("signature")
    if isinstance(thinking, str) and isinstance(signature, str) and signature:
        return {"type": "thinking", "thinking": thinking, "signature": signature}
    return None


# -- response ------------------------------------------------------------------------

def item_prefix(block: dict[str, Any], frame: ResponseFrame) -> str:
    """The id prefix OpenAI uses for the item a block becomes."""
    kind = block.get("type")
    if kind in ("thinking", "redacted_thinking"):
        return "rs"
    if kind == "tool_use":
        spec = frame.tools.get(str(block.get("name", "")))
        return {"custom": "ctc", "local_shell": "lsh"}.get(spec.kind if spec else "", "fc")
    return "msg"


def output_item(
    block: dict[str, Any], item_id: str, frame: ResponseFrame, *, partial: str | None = None, internal: bool = False
) -> dict[str, Any] | None:
    """One answer block as an output item (None for blocks the client never sees).

    ``internal`` items always carry ``encrypted_content``: they are what the response
    store keeps, so a continuation replays signed thinking whatever the client asked."""
    kind = block.get("type")
    if kind in ("thinking", "redacted_thinking"):
        text = block.get("thinking", "")
        item: dict[str, Any] = {
            "id": item_id, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}] if frame.summary and text else [],
        }
        if (frame.encrypted or internal) and (block.get("signature") or block.get("data")):
            item["encrypted_content"] = encode_reasoning(block)
        return item
    if kind == "text":
        return message_item(item_id, block.get("text", ""), "completed")
    if kind == "tool_use":
        return call_item(block, item_id, frame, partial)
    return None  # server tool blocks and anything newer: nothing the client can act on


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [output_text_part(text)] if status != "in_progress" else []}


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(block: dict[str, Any], item_id: str, frame: ResponseFrame, partial: str | None) -> dict[str, Any]:
    """A tool_use block as the item its tool's kind calls for."""
    name = str(block.get("name", ""))
    spec = frame.tools.get(name, ToolSpec("function", name))
    arguments = block.get("input") or {}
    call_id = str(block.get("id", ""))
    status = "incomplete" if partial is not None else "completed"
    if spec.kind == "custom":
        text = arguments.get("input") if isinstance(arguments.get("input"), str) else (
            partial if partial is not None else json.dumps(arguments, ensure_ascii=False))
        item: dict[str, Any] = {"id": item_id, "type": "custom_tool_call", "status": status, "call_id": call_id,
                                "name": spec.name, "input": text}
    elif spec.kind == "local_shell":
        item = {"id": item_id, "type": "local_shell_call", "status": status, "call_id": call_id,
                "action": shell_action(arguments)}
    else:
        raw = partial if partial is not None else json.dumps(arguments, ensure_ascii=False)
        item = {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
                "name": spec.name, "arguments": raw}
    if spec.namespace:
        item["namespace"] = spec.namespace
    return item


def shell_action(arguments: dict[str, Any]) -> dict[str, Any]:
    command = arguments.get("command")
    if isinstance(command, str):
        command = ["bash", "-lc", command]
    env = arguments.get("env")
    return {
        "type": "exec",
        "command": [str(part) for part in command] if isinstance(command, list) else [],
        "env": {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        "timeout_ms": arguments.get("timeout_ms") if isinstance(arguments.get("timeout_ms"), int) else None,
        "user": None,
        "working_directory": arguments.get("working_directory") if isinstance(
            arguments.get("working_directory"), str) else None,
    }


def output_items(
    answer: Answer, frame: ResponseFrame, item_ids: list[str], *, internal: bool = False
) -> list[dict[str, Any]]:
    """The answer's blocks as output items; ``item_ids[i]`` names the item of block ``i``."""
    items = []
    for block, item_id in zip(answer.content, item_ids, strict=True):
        item = output_item(block, item_id, frame, partial=answer.partial_tool_input.get(str(block.get("id", ""))),
                           internal=internal)
        if item is not None:
            items.append(item)
    return items


def usage(anthropic_usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's input_tokens include cached tokens; Anthropic's input_tokens do not.
    Upstream does not count thinking tokens apart from the answer's: reasoning_tokens is 0."""
    cache_read = int(anthropic_usage.get("cache_read_input_tokens") or 0)
    cache_write = int(anthropic_usage.get("cache_creation_input_tokens") or 0)
    prompt = int(anthropic_usage.get("input_tokens") or 0) + cache_write + cache_read
    completion = int(anthropic_usage.get("output_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def outcome(stop_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """(status, incomplete_details) for an upstream stop reason."""
    reason = INCOMPLETE_REASONS.get(stop_reason or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def response_object(
    frame: ResponseFrame,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    return {
        "id": frame.id,
        "object": "response",
        "created_at": frame.created_at,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": incomplete,
        "model": frame.model,
        "output": output,
        # Not in OpenAI's wire format (its SDKs compute it), but some clients read it.
        "output_text": "".join(part["text"] for item in output if item["type"] == "message"
                               for part in item["content"] if part["type"] == "output_text"),
        "usage": usage,
        **frame.echo,
    }


def to_response(
    answer: Answer, frame: ResponseFrame, item_ids: list[str], completed_at: int, *, internal: bool = False
) -> dict[str, Any]:
    """The whole answer as a finished ``response`` object."""
    status, incomplete = outcome(answer.stop_reason)
    return response_object(
        frame, status=status, output=output_items(answer, frame, item_ids, internal=internal),
        usage=usage(answer.usage), incomplete=incomplete, completed_at=completed_at if status == "completed" else None,
    )
