"""The OpenAI error shape for the Responses surface, and the ``error`` of a failed response.

The body is OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (the same three
lines as the Chat Completions surface's; surfaces never import each other).  A wait the
client should make is also written into the message ("try again in 7s"): Codex reads its
back-off from that text.  529 is not an OpenAI status: an overloaded upstream is 503.
"""

from __future__ import annotations

import math
from typing import Any

from claude_code_proxy.exceptions import ClaudeProxyError, InvalidRequestError, OverloadedError, RateLimitError


def message(error: ClaudeProxyError) -> str:
    if error.retry_after is None:
        return error.message
    return f"{error.message} Please try again in {max(1, math.ceil(error.retry_after))}s."


def error_object(error: ClaudeProxyError) -> dict[str, Any]:
    return {"message": message(error), "type": error.openai_type, "param": error.param, "code": error.openai_code}


def status(error: ClaudeProxyError) -> int:
    return 503 if isinstance(error, OverloadedError) else error.status_code


def error_body(error: ClaudeProxyError, request_id: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for ``error``; OpenAI's body has no request id (the header does)."""
    return status(error), {"error": error_object(error)}


def failure(error: ClaudeProxyError) -> dict[str, Any]:
    """The ``error`` of a ``response.failed`` response: its ``code`` is one of OpenAI's
    fixed set (the SDK checks it), so only a rate limit keeps its own."""
    if isinstance(error, RateLimitError):
        code = "rate_limit_exceeded"
    elif isinstance(error, InvalidRequestError):
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {"code": code, "message": message(error)}
