"""One request, end to end: admission, the backend run, observation, then stream or collect.

A route parses and translates, then hands over here; nothing below this module knows
HTTP, and nothing here knows a wire format (the surface passes its stream encoder and
its renderer).  The path of every model request:

    route ─▶ exchange(): backend.ready() ─▶ admitted(): key limits, admission.enter() ─▶ backend.run(chat, ticket)
                 │            observe(): first token, completion, failure -> RequestMetrics
                 ├─ stream:  wait for the first item (early failures keep their status),
                 │           then encoder frames over SSE (or the surface's own framing,
                 │           Ollama's NDJSON); a later failure is an error frame
                 └─ collect: AnswerAccumulator -> Answer -> the surface's render()

Either way the run is cancelled (and its CLI torn down) when the client disconnects.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, Protocol, TypeVar

import anyio
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from claude_code_proxy.backend.admission import Admission
from claude_code_proxy.backend.base import Backend
from claude_code_proxy.chat.answer import Answer, AnswerAccumulator, BackendItem, Completion
from claude_code_proxy.chat.request import ChatRequest
from claude_code_proxy.exceptions import ClaudeProxyError, ClientDisconnectedError
from claude_code_proxy.ops.metrics import RequestMetrics
from claude_code_proxy.web.sse import event_stream

T = TypeVar("T")
log = structlog.get_logger(__name__)

StreamResponse = Callable[[AsyncIterator[bytes], float], Response]
"""(encoded frames, shutdown grace) -> the streaming response that carries them."""


class StreamEncoder(Protocol):
    """A surface's stream encoder: synchronous, wire-ready frames, no I/O."""

    def feed(self, event: dict[str, Any]) -> list[bytes]: ...

    def finish(self, completion: Completion) -> list[bytes]: ...

    def error(self, error: ClaudeProxyError) -> list[bytes]: ...


def tool_names(chat: ChatRequest) -> dict[str, str]:
    """Upstream tool name -> the name the client declared."""
    return {tool.upstream_name: tool.name for tool in chat.tools}


async def exchange(
    request: Request,
    chat: ChatRequest,
    *,
    requested_model: str,
    stream: bool,
    encoder: Callable[[dict[str, str]], StreamEncoder],
    render: Callable[[Answer], dict[str, Any]],
    stream_response: StreamResponse = event_stream,
) -> Response:
    """Run ``chat`` and answer: a stream of ``encoder`` frames (SSE unless the surface
    passes its own ``stream_response``), or ``render(answer)``."""
    state = request.app.state
    backend: Backend = state.backend
    admission: Admission = state.admission
    metrics: RequestMetrics = request.state.metrics
    metrics.model_requested, metrics.stream, metrics.model_resolved = requested_model, stream, chat.model
    names = tool_names(chat)

    backend.ready()
    hold = state.key_limits.hold(getattr(request.state, "api_key", None))
    items = observe(admitted(backend, admission, chat, hold), metrics)
    if stream:
        first = await first_item(request, items)
        metrics.stream_started = True
        return stream_response(frames(chain(first, items), encoder(names)), state.settings.shutdown_grace)
    return JSONResponse(render(await until_disconnect(request, lambda: collect(items, names))))


async def admitted(
    backend: Backend, admission: Admission, chat: ChatRequest, hold: AbstractAsyncContextManager[None]
) -> AsyncGenerator[BackendItem, None]:
    """The backend's run once the key's limits admit it and admission grants a slot.  Both
    happen as the first item is pulled, under the disconnect watch: a request over its key's
    limit, or whose client leaves while queued, spawns nothing."""
    async with hold:
        ticket = await admission.enter()
        try:
            run = backend.run(chat, ticket)
            try:
                async for item in run:
                    yield item
            finally:
                await run.aclose()
        finally:
            if not ticket.taken:  # the run never started: nothing else will free the slot
                ticket.release()


async def observe(
    items: AsyncGenerator[BackendItem, None], metrics: RequestMetrics
) -> AsyncGenerator[BackendItem, None]:
    """Pass the backend's items through, noting first token, completion and failure."""
    try:
        async for item in items:
            metrics.first_item()
            if isinstance(item, Completion):
                metrics.complete(item)
            elif metrics.ttft_ms is None and item.get("type") == "content_block_delta":
                metrics.first_token()
            yield item
    except ClaudeProxyError as error:
        metrics.fail(error)
        raise
    except BaseException:
        if metrics.error_kind is None and not metrics.usage:
            metrics.fail("client_disconnected")
        raise
    finally:
        await _close(items)
        if metrics.stream_started:
            if metrics.error_kind is None and not metrics.usage:
                metrics.fail("client_disconnected")
            metrics.finish(200)


async def collect(items: AsyncGenerator[BackendItem, None], names: dict[str, str]) -> Answer:
    """The whole answer.  ``items`` is closed before returning: its CLI is being torn down
    by the time the client gets the answer."""
    accumulator = AnswerAccumulator(names)
    try:
        async for item in items:
            if isinstance(item, Completion):
                return accumulator.finish(item)
            accumulator.feed(item)
    finally:
        await _close(items)
    raise ClaudeProxyError("The Claude Code CLI ended without an answer.")


async def frames(items: AsyncIterator[BackendItem], encoder: StreamEncoder) -> AsyncIterator[bytes]:
    """The encoder's frames over the run; a failure after the status line is an error frame."""
    try:
        async for item in items:
            if isinstance(item, Completion):
                for frame in encoder.finish(item):
                    yield frame
                return
            for frame in encoder.feed(item):
                yield frame
        raise ClaudeProxyError("The Claude Code CLI ended without an answer.")
    except Exception as error:  # the status line is sent: report in-band, never a silent cut
        if not isinstance(error, ClaudeProxyError):
            log.error("stream_failed", error_class=type(error).__name__)
            error = ClaudeProxyError("Internal error in the proxy.")
        for frame in encoder.error(error):
            yield frame


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


async def first_item(request: Request, items: AsyncGenerator[T, None]) -> T:
    """The backend's first item, raising its error (or ClientDisconnectedError) instead."""
    async def pull() -> T:
        return await items.__anext__()

    try:
        return await until_disconnect(request, pull)
    except BaseException:
        await _close(items)
        raise


async def _close(items: AsyncGenerator[Any, None]) -> None:
    with anyio.CancelScope(shield=True):
        with suppress(Exception):  # closing must not mask the original error
            await items.aclose()


async def chain(first: T, rest: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """``first`` then the rest of ``rest``; closes ``rest`` however the stream ends."""
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await _close(rest)
