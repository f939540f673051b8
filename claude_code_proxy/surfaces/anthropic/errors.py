"""The Anthropic error shape: ``{"type": "error", "error": {"type", "message"}, "request_id"}``."""

from __future__ import annotations

from typing import Any

from claude_code_proxy.exceptions import ClaudeProxyError


def error_object(error: ClaudeProxyError) -> dict[str, Any]:
    return {"type": error.error_type, "message": error.message}


def error_body(error: ClaudeProxyError, request_id: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for ``error``; ``request_id`` is the request's own id."""
    return error.status_code, {"type": "error", "error": error_object(error), "request_id": request_id}
