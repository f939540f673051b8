"""The application factory; no module-level app, no settings built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from claude_code_proxy import __version__
from claude_code_proxy.api import errors, health, metrics_route, openai, usage
from claude_code_proxy.api.context import RequestContextMiddleware
from claude_code_proxy.api.security import SecurityMiddleware
from claude_code_proxy.api.v1 import messages, models
from claude_code_proxy.config.settings import Settings
from claude_code_proxy.log import configure
from claude_code_proxy.services.claude_client import ClaudeBackend, ClaudeClient
from claude_code_proxy.services.ledger import UsageLedger, UsageRecord
from claude_code_proxy.services.metrics import Recorder, RequestMetrics
from claude_code_proxy.services.model_catalog import ModelCatalog
from claude_code_proxy.services.prometheus import ProxyMetrics

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
            app.state.ledger.close()
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

    app.state.ledger = UsageLedger(settings.usage_db, settings.usage_retention_days)
    # Prometheus: per-app registry; its recorder runs beside the ledger's (docs/observability.md).
    app.state.prom = ProxyMetrics(backend=lambda: app.state.backend)
    if hasattr(app.state.backend, "on_warm"):
        prom = app.state.prom
        app.state.backend.on_warm = lambda hit, model: prom.warm_hit(model) if hit else prom.warm_miss(model)

    errors.install(app)
    # Middleware added last runs first: context (request id, metrics), then the guards.
    app.add_middleware(SecurityMiddleware, settings=settings)
    app.add_middleware(RequestContextMiddleware,
                       recorders=lambda: [ledger_recorder(app.state.ledger), app.state.prom.record])
    app.include_router(messages.router)
    app.include_router(models.router)
    app.include_router(openai.router)
    app.include_router(usage.router)
    app.include_router(health.router)
    app.include_router(metrics_route.router)

    return app


def ledger_recorder(ledger: UsageLedger) -> Recorder:
    def record(metrics: RequestMetrics) -> None:
        ledger.record(UsageRecord(
            ts=metrics.ts,
            surface="openai" if metrics.surface == "openai" else "anthropic",
            route=metrics.route,
            model_requested=metrics.model_requested,
            model_used=metrics.model_used,
            stream=metrics.stream,
            status=metrics.status,
            error_kind=metrics.error_kind,
            duration_ms=metrics.duration_ms,
            ttft_ms=metrics.ttft_ms,
            input_tokens=metrics.usage.get("input_tokens", 0),
            output_tokens=metrics.usage.get("output_tokens", 0),
            cache_read_tokens=metrics.usage.get("cache_read_input_tokens", 0),
            cache_creation_tokens=metrics.usage.get("cache_creation_input_tokens", 0),
            cost_usd=metrics.cost_usd,
            client=metrics.client,
            request_id=metrics.request_id,
        ))
    return record
