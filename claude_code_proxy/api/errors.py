"""Errors rendered in each API's shape, in one place.

Anthropic: ``{"type": "error", "error": {"type", "message"}, "request_id"}``.
OpenAI:    ``{"error": {"message", "type", "param", "code"}}``.
The surface is chosen by path: ``/openai/...`` is OpenAI, everything else Anthropic.
Bodies never carry tracebacks, paths or CLI stderr; FastAPI's 422 is never used.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from claude_code_proxy.exceptions import (
    AuthenticationError,
    ClaudeProxyError,
    InvalidRequestError,
    NotFoundError,
    openai_status,
)

log = structlog.get_logger(__name__)


def is_openai(path: str) -> bool:
    return path == "/openai" or path.startswith("/openai/")


def anthropic_body(error: ClaudeProxyError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error.error_type, "message": error.message},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


def openai_body(error: ClaudeProxyError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.openai_type,
            "param": error.param,
            "code": error.openai_code,
        }
    }


def error_response(path: str, error: ClaudeProxyError) -> JSONResponse:
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    if isinstance(error, AuthenticationError):
        headers["www-authenticate"] = "Bearer"
    if error.status_code >= 500:
        # Our 5xx answers are final: a client retry would only repeat the same failure
        # (the CLI already made its own retries upstream).
        headers["x-should-retry"] = "false"
    if is_openai(path):
        return JSONResponse(openai_body(error), status_code=openai_status(error), headers=headers)
    return JSONResponse(anthropic_body(error), status_code=error.status_code, headers=headers)


def validation_error(exc: ValidationError | RequestValidationError) -> InvalidRequestError:
    """The first problem of a validation failure, naming its field."""
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("Invalid request body.")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    # Drop pydantic's union-member tags (e.g. "text", "function-after[...]") from the path.
    param = ".".join(p for p in loc if not (p[:1].islower() and "[" in p)) or None
    message = first.get("msg", "Invalid value")
    return InvalidRequestError(f"{param}: {message}" if param else message, param=param)


def install(app: FastAPI) -> None:
    @app.exception_handler(ClaudeProxyError)
    async def _proxy_error(request: Request, exc: ClaudeProxyError) -> JSONResponse:
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.url.path, validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error: ClaudeProxyError = NotFoundError(f"No route for {request.method} {request.url.path}.")
        elif exc.status_code == 405:
            error = InvalidRequestError(f"Method {request.method} is not allowed here.")
            error.status_code = 405
        else:
            error = ClaudeProxyError(str(exc.detail))
            error.status_code = exc.status_code
        return error_response(request.url.path, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", error_class=type(exc).__name__, path=request.url.path)
        return error_response(request.url.path, ClaudeProxyError("Internal error in the proxy."))
