"""The operational surface: ``/health``, ``/metrics``, ``/usage``, ``/v1/usage/quota`` and ``/dashboard``.

Not an API for models, but it is served, so the registry knows it: its errors take the
default (Anthropic) shape, health checks and scrapes log quietly, and the health checks
and the dashboard's static files are public (they carry no data; ``/usage`` does).
"""

from fastapi import APIRouter

from claude_code_proxy.ops import health, metrics_route, usage
from claude_code_proxy.surfaces.anthropic.errors import error_body
from claude_code_proxy.surfaces.registry import Surface

router = APIRouter()
for part in (health.router, metrics_route.router, usage.router):
    router.routes.extend(part.routes)

SURFACE = Surface(
    name="ops",
    label="ops",
    prefixes=("/health", "/metrics", "/usage", "/v1/usage", "/dashboard"),
    router=router,
    error_body=error_body,
    public_paths=frozenset({"/health", "/health/live"}) | usage.PUBLIC_PATHS,
    quiet_paths=frozenset({"/health", "/health/live", "/metrics"}),
)
