"""Request guards that run before routing, before auth decisions and before the body is read.

In order: Host allow-list (DNS rebinding), Origin deny-by-default with an opt-in CORS list
(drive-by browser requests), JSON-only POST bodies (CSRF through "simple" requests), a body
size limit (413 from Content-Length, or while a chunked body streams in) and a deadline for
the body (408 when it has not all arrived ``body_timeout`` seconds after the headers), then
the API key (Bearer or x-api-key, compared as SHA-256 digests, never from the query string;
the same 401 for every failure).  A pure ASGI middleware, so a refused request costs no body
read and no CLI.

A key is the ``CLAUDE_PROXY_API_KEY`` setting's (compared in constant time; its requests
carry the name ``default``) or a named key from the database (looked up by digest in the
key cache).  Keys are needed when the setting is set, once any named key was added (revoking
the last one leaves the server closed, not open), or when the server listens beyond
loopback.  The key found is put on the request (``scope["state"]["api_key"]``) and its name
on its metrics; public paths answer without one but may show more to a caller who passed it.
"""

from __future__ import annotations

import hmac

import anyio
import structlog

from claude_code_proxy.accounts.keys import SETTING_KEY, ApiKey, digest
from claude_code_proxy.accounts.limits import KeyCache
from claude_code_proxy.config.settings import Settings, is_loopback
from claude_code_proxy.exceptions import (
    AuthenticationError,
    ClaudeProxyError,
    MisdirectedRequestError,
    PermissionDeniedError,
    RequestTimeoutError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
)
from claude_code_proxy.ops.metrics import RequestMetrics
from claude_code_proxy.surfaces.registry import Registry
from claude_code_proxy.web.asgi import ASGIApp, Message, Receive, Scope, Send
from claude_code_proxy.web.errors import error_response

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
CORS_METHODS = "GET, POST, OPTIONS"
GIVES_UP_ON_BODY = frozenset({408, 413})
"""Answers sent while the body may still be coming that will not wait for it: they say
``connection: close``.  Any other early answer (401, 415...) keeps the connection; uvicorn
reads and drops the rest of the body."""
CORS_HEADERS = "authorization, content-type, x-api-key, anthropic-version, anthropic-beta, x-request-id"


def host_name(host_header: str) -> str:
    """The host part of a Host header, lower-cased: ``[::1]:8000`` -> ``[::1]``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, registry: Registry, keys: KeyCache | None = None) -> None:
        self.app = app
        self.registry = registry
        self.allowed_hosts = LOOPBACK_HOSTS | {h.lower() for h in settings.allowed_hosts}
        self.allowed_origins = frozenset(o.rstrip("/") for o in settings.cors_origins)
        self.max_body = settings.max_body_bytes
        self.body_timeout = settings.body_timeout
        self.key_digest = digest(settings.api_key.get_secret_value()) if settings.api_key else None
        self.keys = keys or KeyCache(None)
        self.exposed = not is_loopback(settings.host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        method: str = scope["method"]
        origin = headers.get("origin")
        cors: dict[str, str] = {}

        error = self._check_host(headers)
        if error is None and origin is not None:
            if origin.rstrip("/") not in self.allowed_origins:
                error = PermissionDeniedError("Requests from this browser origin are not allowed.")
            else:
                cors = {"access-control-allow-origin": origin, "vary": "Origin"}
        if error is None and method == "OPTIONS":
            # An allowed origin may send the headers its SDK uses (x-stainless-*, ...).
            await self._preflight(send, cors, headers.get("access-control-request-headers") if cors else None)
            return
        if error is None and method == "POST":
            content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            any_type = self.registry.for_path(path).accepts_any_content_type and origin is None
            if content_type != "application/json" and not any_type:
                error = UnsupportedMediaTypeError("Request bodies must be JSON (Content-Type: application/json).")
            elif int(headers.get("content-length") or 0) > self.max_body:
                error = RequestTooLargeError(f"The request body is larger than {self.max_body} bytes.")
        named = await self.keys.snapshot()
        needs_key = self.key_digest is not None or named.in_use or self.exposed
        key = self._authorized(headers, named.keys) if needs_key else None
        # Public paths answer without the key, but may show more to a caller who passed it.
        scope["state"]["api_key_passed"] = key is not None
        if error is None and needs_key and path not in self.registry.public_paths:
            if key is None:
                error = AuthenticationError("Invalid or missing API key.")
            else:
                scope["state"]["api_key"] = key
                scope["state"]["metrics"].key_name = key.name
                # Every log line of the request carries the key's name (web/context.py unbinds it).
                structlog.contextvars.bind_contextvars(key=key.name)
        if error is not None:
            await self._refuse(scope, receive, send, error, cors)
            return

        received = 0
        body_complete = False
        body_deadline = anyio.current_time() + self.body_timeout

        async def limited_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:  # later receives wait for a disconnect: no deadline then
                return await receive()
            with anyio.move_on_after(body_deadline - anyio.current_time()) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                # Rendered in the route's shape by the app's error handlers.
                raise RequestTimeoutError(
                    f"The request body did not arrive within {self.body_timeout:g} seconds."
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > self.max_body:
                    raise RequestTooLargeError(f"The request body is larger than {self.max_body} bytes.")
            return message

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = dict(cors)
                said = any(name.lower() == b"connection" for name, _ in message.get("headers", []))
                if not body_complete and message["status"] in GIVES_UP_ON_BODY and not said:
                    extra["connection"] = "close"
                if extra:
                    message["headers"] = [*message.get("headers", []),
                                          *((k.encode(), v.encode()) for k, v in extra.items())]
            await send(message)

        await self.app(scope, limited_receive, send_with_cors)

    def _check_host(self, headers: dict[str, str]) -> ClaudeProxyError | None:
        if host_name(headers.get("host", "")) in self.allowed_hosts:
            return None
        return MisdirectedRequestError("This Host is not served here (DNS-rebinding protection).")

    def _authorized(self, headers: dict[str, str], named: dict[str, ApiKey]) -> ApiKey | None:
        """The key every presented key is, or None."""
        candidates = []
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            candidates.append(auth[7:])
        if "x-api-key" in headers:
            candidates.append(headers["x-api-key"])
        if not candidates:
            return None
        # Every presented key must match the same key: a wrong one never rides along with a right one.
        found = {self._identify(c, named) for c in candidates}
        return found.pop() if len(found) == 1 else None

    def _identify(self, candidate: str, named: dict[str, ApiKey]) -> ApiKey | None:
        presented = digest(candidate)
        if self.key_digest is not None and hmac.compare_digest(presented, self.key_digest):
            return SETTING_KEY
        # A dict lookup by the digest of a 256-bit random key: timing reveals nothing usable.
        return named.get(presented.hex())

    async def _preflight(self, send: Send, cors: dict[str, str], requested: str | None) -> None:
        allowed = CORS_HEADERS
        if requested:
            names = [h.strip().lower() for h in requested.split(",") if h.strip()]
            allowed = ", ".join(n for n in names if n.replace("-", "").isalnum())[:2000] or CORS_HEADERS
        headers = {
            **cors,
            "access-control-allow-methods": CORS_METHODS,
            "access-control-allow-headers": allowed,
            "access-control-max-age": "600",
            "content-length": "0",
        }
        await send({"type": "http.response.start", "status": 204,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: ClaudeProxyError,
                      cors: dict[str, str]) -> None:
        metrics: RequestMetrics = scope["state"]["metrics"]  # web/context.py runs first
        if metrics.error_kind is None:
            metrics.fail(error)
        response = error_response(self.registry, scope["path"], error, metrics.request_id)
        response.headers.update(cors)
        if error.status_code in GIVES_UP_ON_BODY:
            response.headers["connection"] = "close"
        await response(scope, receive, send)
