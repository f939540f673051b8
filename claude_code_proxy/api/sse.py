"""All SSE framing, and the two ways a route runs a backend: collect or stream.

Wire formats (checked against the official SDKs):
- Anthropic: ``event: <type>`` + ``data: <json>`` per event; the event line is
  mandatory, the Anthropic SDK skips frames without it.
- OpenAI: ``data: <json>`` only, ending with ``data: [DONE]``.
Separators are ``\\n`` (sse-starlette defaults to ``\\r\\n``; both SDKs accept either,
but ``\\n`` is what the vendors send).  Keep-alive pings are SSE comments, which both
SDKs ignore.

A streaming request waits for the backend's first item before answering, so a failure
that happens before any token (429, auth, model) gets its real HTTP status and JSON
body instead of a 200 stream.  Both paths stop the backend (and so the CLI) as soon as
the client disconnects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from claude_code_proxy.exceptions import ClaudeProxyError, ClientDisconnectedError
from claude_code_proxy.models.chat import ChatRequest
from claude_code_proxy.services.claude_client import BackendItem, ClaudeBackend
from claude_code_proxy.services.metrics import observe
from claude_code_proxy.services.runner import collect_message, tool_names

T = TypeVar("T")
SEP = "\n"
PING_SECONDS = 15


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(data: Any) -> str:
    return _ENCODER.encode(data)


# Frames are encoded here, once, straight to bytes: compact JSON never contains a raw
# newline, so one ``data:`` line always holds the whole payload (the hot path of a stream).
def anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {dumps(data)}\n\n".encode()


def openai_data(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else dumps(data)}\n\n".encode()


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep=SEP)


def event_stream(request: Request, frames: AsyncIterator[bytes]) -> EventSourceResponse:
    # On shutdown, sse-starlette would cancel streams at once; give them the grace period
    # (plus a margin) so the backend's drain deadline can end them with an error event.
    grace: float = request.app.state.settings.shutdown_grace + 1.0
    return EventSourceResponse(
        frames,
        sep=SEP,
        ping=PING_SECONDS,
        ping_message_factory=_ping,
        shutdown_event=anyio.Event(),
        shutdown_grace_period=grace,
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def until_disconnect(request: Request, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` but cancel it (and so tear down the CLI) if the client disconnects."""
    result: list[T] = []
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            result.append(await work())
        except Exception as exc:  # re-raised below, outside the task group (no ExceptionGroup)
            failure.append(exc)

    async def watch(scope: anyio.CancelScope) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                scope.cancel()
                return

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        await run()
        group.cancel_scope.cancel()
    if failure:
        raise failure[0]
    if not result:
        raise ClientDisconnectedError
    return result[0]


async def first_item(request: Request, items: AsyncIterator[T]) -> T:
    """The backend's first item, raising its error (or ClientDisconnectedError) instead."""
    async def pull() -> T:
        return await items.__anext__()

    try:
        return await until_disconnect(request, pull)
    except BaseException:
        await _close(items)
        raise


async def _close(items: AsyncIterator[Any]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            with suppress(Exception):  # closing must not mask the original error
                await aclose()


async def chain(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    """``first`` then the rest of ``rest``; closes ``rest`` however the stream ends."""
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await _close(rest)


__all__ = [
    "ClaudeProxyError",
    "ClientDisconnectedError",
    "anthropic_event",
    "chain",
    "event_stream",
    "first_item",
    "openai_data",
    "until_disconnect",
]


async def respond(
    request: Request,
    backend: ClaudeBackend,
    chat: ChatRequest,
    *,
    requested_model: str,
    stream: bool,
    frames: Callable[[AsyncIterator[BackendItem], dict[str, str]], AsyncIterator[bytes]],
    render: Callable[[dict[str, Any]], dict[str, Any]] = lambda message: message,
) -> Response:
    """The one way both surfaces run a request and answer it.

    Streaming: ``frames`` (the surface's encoder) over the backend's items, started only once
    the first item is in, so early failures keep their status.  Otherwise: the whole Message,
    shaped by ``render``.  Either way the run is cancelled if the client leaves, and the
    request's metrics follow it.
    """
    metrics = request.state.metrics
    metrics.model_requested, metrics.stream, metrics.model_used = requested_model, stream, chat.model
    names = tool_names(chat)
    items = observe(backend.run(chat), metrics)
    if stream:
        first = await first_item(request, items)
        metrics.stream_started = True
        return event_stream(request, frames(chain(first, items), names))

    async def collect() -> dict[str, Any]:
        return render(await collect_message(items, names))

    return JSONResponse(await until_disconnect(request, collect))
