"""Content rules every surface's translator shares: checks and conversation shape.

Pure functions: no I/O, no settings, no logging.  What upstream accepts (image sources,
tool ids, text without NUL or lone surrogates), what the CLI can carry (alternating turns
that end with the user), and the thinking options, whichever surface a request came from.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import socket
from typing import Any
from urllib.parse import urlsplit

from claude_code_proxy.chat.request import ClientTool
from claude_code_proxy.exceptions import InvalidRequestError

MAX_IMAGE_BYTES = 5 * 1024 * 1024
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")
CLI_ARGUMENT_BYTES = 128 * 1024 - 1
"""The longest single command-line argument Linux accepts (MAX_ARG_STRLEN, less its NUL)."""


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


def image_from_url(url: str, param: str) -> dict[str, Any]:
    """An image block for an OpenAI-style image URL: a base64 data URL or a public http(s) URL."""
    if url[:5].lower() == "data:":
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        media_type = media_type.strip().lower()
        if not sep or encoding.strip().lower() != "base64":
            raise InvalidRequestError(
                "Image data URLs must be base64 encoded (data:image/png;base64,...).", param=param
            )
        if media_type not in IMAGE_MEDIA_TYPES:
            raise InvalidRequestError(
                f"Unsupported image type {media_type or 'none'!r}; use one of {', '.join(IMAGE_MEDIA_TYPES)}.",
                param=param,
            )
        check_base64_image(data, param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    check_image_url(url, param)
    return {"type": "image", "source": {"type": "url", "url": url}}


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


def check_output_schema(schema: dict[str, Any], param: str) -> None:
    """A structured-output schema reaches the CLI as one command-line argument (there is no
    other way in): refuse one too long for the operating system before anything starts."""
    size = len(json.dumps(schema))  # exactly as the SDK writes it
    if size > CLI_ARGUMENT_BYTES:
        raise InvalidRequestError(
            f"The JSON schema is {size} bytes as JSON; at most {CLI_ARGUMENT_BYTES} bytes can be passed "
            "to the Claude Code CLI (one command-line argument).",
            param=param,
        )


def check_tools(tools: list[tuple[str, ClientTool]]) -> None:
    """Tool names the model can tell apart: each declared once, and no two that reach the
    model as the same name (the CLI rewrites characters outside ``[a-zA-Z0-9_-]`` to ``_``,
    so ``a.b`` and ``a_b`` would collide).  ``tools`` pairs each tool with its field path."""
    declared: dict[str, ClientTool] = {}
    for param, tool in tools:
        if tool.name in declared:
            raise InvalidRequestError(f"Tool names must be unique: {tool.name!r} is declared twice.", param=param)
        twin = next((other for other in declared.values() if other.cli_name == tool.cli_name), None)
        if twin is not None:
            raise InvalidRequestError(
                f"Tools {twin.name!r} and {tool.name!r} would both reach the model as {tool.cli_name!r} "
                "(characters other than letters, digits, _ and - become _): rename one.",
                param=param,
            )
        declared[tool.name] = tool


def check_tool_choice(kind: str, name: str | None, tools: list[ClientTool], param: str) -> None:
    """A tool_choice that forces a tool needs tools, and a named one must be among them."""
    if kind in ("any", "tool") and not tools:
        raise InvalidRequestError("tool_choice forces a tool call, but the request declares no tools.", param=param)
    if kind == "tool" and not name:
        raise InvalidRequestError("tool_choice of type tool must name the tool.", param=param)
    if kind == "tool" and name not in {tool.name for tool in tools}:
        raise InvalidRequestError(f"tool_choice names {name!r}, which is not among the tools.", param=param)


def clean_stop_sequences(stops: list[str] | None) -> list[str]:
    """Anthropic rejects empty or whitespace-only stop sequences: drop them."""
    return [s for s in (stops or []) if s.strip()]


# OpenAI's reasoning effort -> a thinking budget (LiteLLM's table; Anthropic's minimum is 1024).
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
MIN_THINKING_BUDGET = 1024


def effort_thinking(
    effort: str | None, explicit: int | None, default_max_tokens: int
) -> tuple[int, dict[str, Any] | None]:
    """``(max_tokens, thinking)`` for an OpenAI reasoning effort; the budget stays below max_tokens."""
    if effort is None or effort == "none":
        return explicit or default_max_tokens, None
    tokens = THINKING_BUDGETS[effort]
    if explicit is None:
        # Room for the answer after the thinking (LiteLLM uses budget + 4096 too).
        return max(default_max_tokens, tokens + default_max_tokens), {"type": "enabled", "budget_tokens": tokens}
    tokens = min(tokens, explicit - 1)
    if tokens < MIN_THINKING_BUDGET:
        return explicit, None  # too small a max_tokens to think at all
    return explicit, {"type": "enabled", "budget_tokens": tokens}


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


def text_blocks(text: str, param: str) -> list[dict[str, Any]]:
    """A text as content blocks: one checked text block, or none for blank text."""
    check_text(text, param)
    return [{"type": "text", "text": text}] if text.strip() else []


def tool_arguments(raw: dict[str, Any] | str | None, param: str) -> dict[str, Any]:
    """Tool-call arguments as an object: JSON text or an object; empty means none (LiteLLM bug 1)."""
    if raw is None or isinstance(raw, dict):
        return raw or {}
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRequestError("Tool call arguments must be a JSON object.", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequestError("Tool call arguments must be a JSON object.", param=param)
    return value
