"""The application factory; no module-level app, no settings built at import time."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response

from claude_code_proxy import __version__
from claude_code_proxy.api import errors, health
from claude_code_proxy.api.v1 import messages, models
from claude_code_proxy.config.settings import Settings
from claude_code_proxy.log import configure, escape
from claude_code_proxy.services.claude_client import ClaudeBackend, ClaudeClient
from claude_code_proxy.services.model_catalog import ModelCatalog

log = structlog.get_logger("claude_code_proxy")


def create_app(settings: Settings | None = None, backend: ClaudeBackend | None = None) -> FastAPI:
    settings = settings or Settings()
    configure(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("startup", version=__version__, host=settings.host, port=settings.port)
        try:
            yield
        finally:
            await app.state.backend.aclose()
            log.info("shutdown")

    app = FastAPI(
        title="claude-code-proxy",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.backend = backend or ClaudeClient(settings)
    app.state.catalog = ModelCatalog(settings.models, settings.model_aliases, settings.default_model)

    errors.install(app)
    app.include_router(messages.router)
    app.include_router(models.router)
    app.include_router(health.router)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = escape(request.headers.get("x-request-id") or f"req_{uuid.uuid4().hex[:24]}", 128)
        structlog.contextvars.bind_contextvars(request_id=request_id, route=request.url.path)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "route")
        response.headers["x-request-id"] = request_id
        log.info(
            "request",
            request_id=request_id,
            method=request.method,
            route=request.url.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    return app
