"""The Ollama error shape: ``{"error": "<message>"}`` with the HTTP status.

529 is not a status Ollama's clients know: an overloaded upstream is 503 here.
"""

from __future__ import annotations

from typing import Any

from claude_code_proxy.exceptions import ClaudeProxyError, OverloadedError


def status(error: ClaudeProxyError) -> int:
    return 503 if isinstance(error, OverloadedError) else error.status_code


def error_body(error: ClaudeProxyError, request_id: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for ``error``; Ollama's body has no request id (the header does)."""
    return status(error), {"error": error.message}
