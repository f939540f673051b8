"""``GET /metrics``: the app's Prometheus registry in the text exposition format.

Not a public path: when an API key is set, a scraper must send it (``Authorization: Bearer``
or ``x-api-key``).  Rendering reads counters and a few backend attributes; it never starts a
CLI.  See ``ops/prometheus.py`` and docs/observability.md.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import generate_latest

from claude_code_proxy.ops.prometheus import CONTENT_TYPE, ProxyMetrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    prom: ProxyMetrics = request.app.state.prom
    return Response(generate_latest(prom.registry), media_type=CONTENT_TYPE, headers={"cache-control": "no-store"})
