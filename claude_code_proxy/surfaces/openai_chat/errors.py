"""The OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``.

529 is not an OpenAI status: an overloaded upstream is 503 here.
"""

from __future__ import annotations

from typing import Any

from claude_code_proxy.exceptions import ClaudeProxyError, OverloadedError


def error_object(error: ClaudeProxyError) -> dict[str, Any]:
    return {"message": error.message, "type": error.openai_type, "param": error.param, "code": error.openai_code}


def status(error: ClaudeProxyError) -> int:
    return 503 if isinstance(error, OverloadedError) else error.status_code


def error_body(error: ClaudeProxyError, request_id: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for ``error``; OpenAI's body has no request id (the header does)."""
    return status(error), {"error": error_object(error)}
