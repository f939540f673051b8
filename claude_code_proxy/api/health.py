"""``GET /health``: liveness plus the CLI's state, for scripts and Docker.

Never calls the model.  The CLI probe (``--version`` and ``auth status``) is cached
by the Claude client, so frequent health checks spawn nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from claude_code_proxy import __version__
from claude_code_proxy.api.deps import BackendDep

router = APIRouter()


@router.get("/health")
async def health(backend: BackendDep) -> dict[str, Any]:
    cli = await backend.status()
    if not cli.found:
        status = "cli_not_found"
    elif cli.logged_in is False:
        status = "not_logged_in"
    else:
        status = "ok"
    return {"status": status, "version": __version__, "cli": cli.as_json()}
