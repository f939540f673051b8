"""Per-request context as a pure ASGI middleware (no BaseHTTPMiddleware: streams pass
through untouched and cancellation stays prompt).

It takes or makes the request id (``x-request-id``, escaped), returns it as a header, binds
it to every log line of the request, and owns the request's ``RequestMetrics``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import structlog

from claude_code_proxy.log import escape
from claude_code_proxy.ops.ledger import client_name
from claude_code_proxy.ops.metrics import Recorder, RequestMetrics
from claude_code_proxy.surfaces.registry import Registry
from claude_code_proxy.web.asgi import ASGIApp, Message, Receive, Scope, Send


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, registry: Registry, recorders: Callable[[], list[Recorder]]) -> None:
        self.app = app
        self.registry = registry
        self.recorders = recorders

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = escape(headers.get("x-request-id") or f"req_{uuid.uuid4().hex[:24]}", 128)
        path: str = scope["path"]
        metrics = RequestMetrics(
            request_id=request_id,
            route=escape(path),
            method=scope["method"],
            client=client_name(headers.get("user-agent", "")),
            surface=self.registry.for_path(path).label,
            recorders=self.recorders() if path in self.registry.model_paths else [],
            quiet=path in self.registry.quiet_paths,
        )
        scope.setdefault("state", {})["metrics"] = metrics
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "key")
            if not metrics.stream_started:
                metrics.finish(status)
