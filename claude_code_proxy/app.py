"""The application factory; no module-level app, no settings built at import time.

``create_app`` wires the layers: the surfaces the registry lists (each router mounted as
is), the guards and request context in front of them, admission and the backend below
the exchange, and the ledger and Prometheus recorders fed by each request's metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from claude_code_proxy import __version__
from claude_code_proxy.accounts.limits import KeyCache, KeyLimits
from claude_code_proxy.accounts.store import KeyStore
from claude_code_proxy.backend.admission import Admission
from claude_code_proxy.backend.base import Backend
from claude_code_proxy.backend.claude import ClaudeClient
from claude_code_proxy.catalog import ModelCatalog
from claude_code_proxy.config.settings import Settings
from claude_code_proxy.log import configure
from claude_code_proxy.ops.ledger import UsageLedger, UsageRecord
from claude_code_proxy.ops.metrics import Recorder, RequestMetrics
from claude_code_proxy.ops.prometheus import ProxyMetrics
from claude_code_proxy.storage.database import Database, DatabaseError, open_database
from claude_code_proxy.surfaces.registry import Registry, Surface, default_surfaces
from claude_code_proxy.web import errors
from claude_code_proxy.web.context import RequestContextMiddleware
from claude_code_proxy.web.guards import SecurityMiddleware

log = structlog.get_logger("claude_code_proxy")

def create_app(
    settings: Settings | None = None,
    backend: Backend | None = None,
    surfaces: Iterable[Surface] | None = None,
) -> FastAPI:
    """The app; the Claude Code CLI backend unless ``backend`` is given (tests script one),
    the registry's default surfaces unless ``surfaces`` are."""
    settings = settings or Settings()
    configure(settings.log_level, settings.log_format)
    registry = Registry(default_surfaces() if surfaces is None else surfaces)

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
    admission = Admission(settings.max_concurrency, settings.queue_size, settings.queue_timeout)
    catalog = ModelCatalog(settings.models, settings.model_aliases, settings.default_model)
    prom = ProxyMetrics(registry.model_paths, backend=lambda: app.state.backend, admission=admission,
                        known_model=catalog.label)
    app.state.settings = settings
    app.state.registry = registry
    app.state.admission = admission
    app.state.prom = prom
    app.state.backend = backend or ClaudeClient(settings, admission, prom)
    app.state.catalog = catalog
    db = _database(settings)
    store = KeyStore(db) if db is not None else None
    keys = KeyCache(store)
    app.state.ledger = UsageLedger(db, settings.usage_retention_days)
    app.state.keys = keys
    # A lease outlives any request it could belong to, so a replica that dies leaves none for long.
    app.state.key_limits = KeyLimits(store, settings.request_timeout + settings.shutdown_grace + 60)

    errors.install(app)
    # Middleware added last runs first: context (request id, metrics), then the guards.
    app.add_middleware(SecurityMiddleware, settings=settings, registry=registry, keys=keys)
    app.add_middleware(RequestContextMiddleware, registry=registry,
                       recorders=lambda: [ledger_recorder(app.state.ledger), prom.record])
    for surface in registry.surfaces:
        app.include_router(surface.router)
    return app


def _database(settings: Settings) -> Database | None:
    """The ledger's and keys' database; None (and the proxy serves without them) when it is
    switched off or cannot be opened."""
    try:
        url = settings.database_url.get_secret_value() if settings.database_url else ""
        return open_database(url or settings.usage_db)
    except DatabaseError as exc:
        log.error("database.unavailable", error=str(exc)[:300])
        return None


def ledger_recorder(ledger: UsageLedger) -> Recorder:
    def record(metrics: RequestMetrics) -> None:
        ledger.record(UsageRecord(
            ts=metrics.ts,
            surface=metrics.surface,
            route=metrics.route,
            model_requested=metrics.model_requested,
            model_used=metrics.model_used,
            model_resolved=metrics.model_resolved,
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
            key_name=metrics.key_name,
        ))
    return record
