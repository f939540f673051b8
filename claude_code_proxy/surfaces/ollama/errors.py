"""The Ollama error shape: ``{"error": "<message>"}`` with the HTTP status.

The body has no field for the parameter at fault, so a bad request's message starts with
it (``messages.3.images.0: ...``).  529 is not a status Ollama's clients know: an
overloaded upstream is 503 here.
"""

from __future__ import annotations

from typing import Any

from claude_code_proxy.exceptions import ClaudeProxyError, InvalidRequestError, OverloadedError


def status(error: ClaudeProxyError) -> int:
    return 503 if isinstance(error, OverloadedError) else error.status_code


def message(error: ClaudeProxyError) -> str:
    param = error.param
    if isinstance(error, InvalidRequestError) and param and not error.message.startswith(param):
        return f"{param}: {error.message}"
    return error.message


def error_body(error: ClaudeProxyError, request_id: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for ``error``; Ollama's body has no request id (the header does)."""
    return status(error), {"error": message(error)}
