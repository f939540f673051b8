"""Pure translation from each surface's request into a ``ChatRequest``.

No I/O, no settings, no logging: every function here takes values and returns values,
so it is tested with plain data.  The OpenAI half lives in ``openai_translator``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urlsplit

from claude_code_proxy.exceptions import InvalidRequestError
from claude_code_proxy.models.chat import ChatRequest, ClientTool
from claude_code_proxy.models.requests import MessagesRequest

MAX_IMAGE_BYTES = 5 * 1024 * 1024
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def sanitize_tool_id(tool_id: str) -> str:
    """Anthropic ids must match ``^[a-zA-Z0-9_-]+$``; map others the same way every time."""
    cleaned = _TOOL_ID_BAD.sub("_", tool_id)
    return cleaned or "toolu_empty"


def check_image_url(url: str, param: str) -> None:
    """Only public http(s) URLs: never files, loopback, link-local or private hosts."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError("Image URLs must be http(s) URLs or data URLs.", param=param)
    host = parts.hostname.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        raise InvalidRequestError("Image URLs may not point at local addresses.", param=param)
    address = _numeric_host(host)
    if address is None:
        return
    mapped = getattr(address, "ipv4_mapped", None)
    if not address.is_global or (mapped is not None and not mapped.is_global):
        raise InvalidRequestError("Image URLs may not point at local or private addresses.", param=param)


def _numeric_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a numeric host means, in every form a resolver accepts (``127.1``,
    ``2130706433``, ``0x7f000001``, ``0177.0.0.1``), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host):  # inet_aton accepts only numeric forms of these
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_base64_image(data: str, param: str) -> None:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("Image data is not valid base64.", param=param) from None
    if not raw:
        raise InvalidRequestError("Image data is empty.", param=param)
    if len(raw) > MAX_IMAGE_BYTES:
        raise InvalidRequestError("Image is larger than 5 MB.", param=param)


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


def merge_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge consecutive same-role turns; tool results always lead a user turn."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if not message["content"]:
            continue
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"].extend(message["content"])
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    for message in merged:
        if message["role"] == "user":
            results = [b for b in message["content"] if b["type"] == "tool_result"]
            if results:
                others = [b for b in message["content"] if b["type"] != "tool_result"]
                message["content"] = results + others
    return merged


def finish_conversation(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check the shape the CLI can carry: ends with a user turn (a prefill is dropped)."""
    if messages and messages[-1]["role"] == "assistant":
        # Intentional divergence: the CLI cannot send a trailing assistant "prefill";
        # it is dropped rather than refused (docs/compatibility.md).
        messages = messages[:-1]
    if not messages:
        raise InvalidRequestError("messages must contain at least one non-empty user message.", param="messages")
    return messages


def check_text(value: str, param: str) -> None:
    """Reject what would crash the CLI's transport: NUL bytes and lone surrogates."""
    if "\x00" in value:
        raise InvalidRequestError("Text may not contain NUL characters.", param=param)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError("Text contains invalid Unicode (a lone surrogate).", param=param) from None


def check_strings(value: Any, param: str) -> None:
    """Walk a JSON value and check every string in it."""
    if isinstance(value, str):
        check_text(value, param)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, param)
            check_strings(item, param)
    elif isinstance(value, list):
        for item in value:
            check_strings(item, param)


def clean_stop_sequences(stops: list[str] | None) -> list[str]:
    """Anthropic rejects empty or whitespace-only stop sequences: drop them."""
    return [s for s in (stops or []) if s.strip()]


def thinking_options(thinking: Any, max_tokens: int) -> dict[str, Any] | None:
    if thinking is None or thinking.type == "disabled":
        return None
    if thinking.type == "adaptive":
        return {"type": "adaptive"}
    if thinking.budget_tokens >= max_tokens:
        raise InvalidRequestError(
            "thinking.budget_tokens must be less than max_tokens.", param="thinking.budget_tokens"
        )
    return {"type": "enabled", "budget_tokens": thinking.budget_tokens}


def from_anthropic(request: MessagesRequest, model: str) -> ChatRequest:
    """An Anthropic Messages request as the internal request (model already resolved)."""
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages):
        param = f"messages.{i}.content"
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
    tools = [
        ClientTool(name=t.name, description=t.description or "", input_schema=t.input_schema)
        for t in request.tools or []
    ]
    tool_choice = request.tool_choice.model_dump(exclude_none=True) if request.tool_choice else None
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
