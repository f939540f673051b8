"""``GET /health``: liveness plus the CLI's state, for scripts and Docker.

Never calls the model.  The CLI probe (``--version`` and ``auth status``) is cached
by the Claude client, so frequent health checks spawn nothing.  ``GET /health/live``
touches no backend at all: it is what the Docker HEALTHCHECK calls.

Anyone may ask; the details (the CLI's path, which can name the user, its version, the
login method, the rate-limit state) go only to a caller on this machine (loopback) or one
who passed the API key.  Everyone else gets the status and the proxy's version.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from claude_code_proxy import __version__
from claude_code_proxy.backend import quota
from claude_code_proxy.config.settings import is_loopback
from claude_code_proxy.web.body import BackendDep

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, str]:
    """Liveness only: the event loop answers.  Spawns nothing, reads nothing."""
    return {"status": "ok"}


@router.get("/health")
async def health(request: Request, backend: BackendDep) -> dict[str, Any]:
    cli = await backend.status()
    if not cli.found:
        status = "cli_not_found"
    elif cli.logged_in is False:
        status = "not_logged_in"
    else:
        status = "ok"
    if not shows_details(request):
        return {"status": status, "version": __version__}
    # The subscription's latest rate-limit state the CLI reported (None until it reports one),
    # and the same as GET /v1/usage/quota shows it.
    rate_limit = backend.stats().rate_limit
    return {"status": status, "version": __version__, "cli": cli.as_json(), "rate_limit": rate_limit,
            "quota": quota.report(rate_limit, cli)}


def shows_details(request: Request) -> bool:
    """A caller on loopback (as uvicorn sees it, after trusted proxy headers), or with the key."""
    client = request.client
    return bool(getattr(request.state, "api_key_passed", False)) or (client is not None and is_loopback(client.host))


@router.get("/v1/usage/quota")
async def account_quota(backend: BackendDep) -> dict[str, Any]:
    """The account's plan limits as this replica's login last reported them."""
    return quota.report(backend.stats().rate_limit, await backend.status())
