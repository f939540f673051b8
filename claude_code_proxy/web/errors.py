"""Errors as HTTP responses, each in the shape of the surface that owns the path.

The registry picks the surface (its ``errors`` module draws the body); the request id in
a body is the request's own, the one echoed in ``x-request-id`` and logged.  Bodies never
carry tracebacks, paths or CLI stderr; FastAPI's 422 is never used.
"""

from __future__ import annotations

import math

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from claude_code_proxy.exceptions import (
    AuthenticationError,
    ClaudeProxyError,
    ClientDisconnectedError,
    HTTPStatusError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
)
from claude_code_proxy.ops.metrics import RequestMetrics
from claude_code_proxy.surfaces.registry import Registry

log = structlog.get_logger(__name__)


def error_response(registry: Registry, path: str, error: ClaudeProxyError, request_id: str) -> JSONResponse:
    """``error`` in the shape of the surface that owns ``path``."""
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after)))
    if isinstance(error, AuthenticationError):
        headers["www-authenticate"] = "Bearer"
    if error.status_code >= 500:
        # Our 5xx answers are final: a client retry would only repeat the same failure
        # (the CLI already made its own retries upstream).
        headers["x-should-retry"] = "false"
    status, body = registry.error_body(path, error, request_id)
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """pydantic's error location as the client's field path.

    Union errors insert the member's name (``messages.0.tool.tool_call_id``,
    ``thinking.enabled.budget_tokens``, ``tool_choice.NamedToolChoice.function``); the
    client never wrote that segment, so it is dropped.  A member name is a tag or a class
    name that stands below the top level, is followed by more, and does not itself follow a
    member name (the segment after one is the member's own field: ``image_url.image_url.url``).
    """
    parts = [str(p) for p in loc if p != "body"]
    out: list[str] = []
    after_member = False
    for i, part in enumerate(parts):
        if "[" in part or part in ("str", "int", "float", "bool", "dict", "list"):
            continue  # union members named by type ("list[...]", "function-after[...]")
        member = i > 0 and i + 1 < len(parts) and not after_member and (_is_tag(part) or _is_class(part))
        after_member = member
        if not member:
            out.append(part)
    return ".".join(out)


_TAGS = frozenset({
    "user", "assistant", "system", "developer", "tool", "text", "image", "image_url", "document",
    "tool_use", "tool_result", "thinking", "redacted_thinking", "base64", "url", "enabled", "adaptive", "disabled",
    "input_audio", "file", "refusal", "json_object", "json_schema",
})


def _is_tag(part: str) -> bool:
    return part in _TAGS


def _is_class(part: str) -> bool:
    """A model class name (wire fields are snake_case): a plain union's member."""
    return part[:1].isupper() and part.isalnum()


def validation_error(exc: ValidationError | RequestValidationError) -> InvalidRequestError:
    """The first problem of a validation failure, naming its field."""
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("Invalid request body.")
    # With unions, pydantic reports one error per member; the deepest is the most specific.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    param = field_path(first.get("loc", ())) or None
    message = first.get("msg", "Invalid value")
    return InvalidRequestError(f"{param}: {message}" if param else message, param=param)


def _metrics(request: Request) -> RequestMetrics:
    metrics: RequestMetrics = request.state.metrics  # set for every request by web/context.py
    return metrics


def _render(request: Request, error: ClaudeProxyError) -> JSONResponse:
    metrics = _metrics(request)
    if metrics.error_kind is None:
        metrics.fail(error)
    return error_response(request.app.state.registry, request.url.path, error, metrics.request_id)


def install(app: FastAPI) -> None:
    @app.exception_handler(ClaudeProxyError)
    async def _proxy_error(request: Request, exc: ClaudeProxyError) -> JSONResponse:
        return _render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _render(request, validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error: ClaudeProxyError
        if exc.status_code == 404:
            error = NotFoundError(f"No route for {request.method} {request.url.path}.")
        elif exc.status_code == 405:
            error = MethodNotAllowedError(f"Method {request.method} is not allowed here.")
        else:
            error = HTTPStatusError(str(exc.detail), exc.status_code)
        return _render(request, error)

    @app.exception_handler(ClientDisconnectedError)
    async def _gone(request: Request, exc: ClientDisconnectedError) -> Response:
        # Nobody is listening any more; 499 (nginx's "client closed request") marks it in logs.
        metrics = _metrics(request)
        if metrics.error_kind is None:
            metrics.fail("client_disconnected")
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", error_class=type(exc).__name__, path=request.url.path)
        return _render(request, ClaudeProxyError("Internal error in the proxy."))
