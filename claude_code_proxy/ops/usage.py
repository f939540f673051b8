"""``GET /usage`` (the ledger as JSON) and ``GET /dashboard`` (a page that shows it).

The dashboard is three static files shipped in the package (``static/``), with no
third-party script.  Its HTML and assets carry no data, so they may be served without
the API key; the page asks for the key, keeps it in ``sessionStorage`` and sends it as
``Authorization: Bearer`` on its ``/usage`` fetches, which are what the key protects.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from claude_code_proxy.exceptions import InvalidRequestError, NotFoundError
from claude_code_proxy.ops.ledger import GROUP_BY_VALUES, GroupBy, UsageLedger, parse_when

router = APIRouter()

# What the API-key guard lets through: the page and its assets, never /usage.
PUBLIC_PATHS = frozenset({"/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css"})

_ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# No inline script or style and no other origin: client-controlled strings (model and
# client names) can never become markup that runs.
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def get_ledger(request: Request) -> UsageLedger:
    ledger: UsageLedger = request.app.state.ledger
    return ledger


LedgerDep = Annotated[UsageLedger, Depends(get_ledger)]


def _when(value: str | None, name: str, *, end: bool = False) -> float | None:
    try:
        return parse_when(value, end=end)
    except ValueError:
        raise InvalidRequestError(
            f"{name}: expected an ISO date (2025-01-31), an ISO datetime or epoch seconds.", param=name
        ) from None


@router.get("/usage")
async def usage(
    ledger: LedgerDep,
    since: str | None = None,
    until: str | None = None,
    group_by: str = "day",
    recent: Annotated[int, Query(ge=0, le=500)] = 20,
    key: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    start, end = _when(since, "since"), _when(until, "until", end=True)
    if start is not None and end is not None and end <= start:
        raise InvalidRequestError("until: must be later than since.", param="until")
    if group_by not in GROUP_BY_VALUES:
        raise InvalidRequestError(f"group_by: expected one of {', '.join(GROUP_BY_VALUES)}.", param="group_by")
    return await run_in_threadpool(ledger.report, start, end, cast(GroupBy, group_by), recent, key)


@lru_cache
def _asset(name: str) -> bytes:
    return (resources.files("claude_code_proxy") / "static" / name).read_bytes()


def _static(name: str) -> Response:
    return Response(_asset(name), media_type=_ASSETS[name], headers=_HEADERS)


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> Response:
    return _static("dashboard.html")


@router.get("/dashboard/{asset}", include_in_schema=False)
async def dashboard_asset(asset: str) -> Response:
    if asset not in _ASSETS or asset == "dashboard.html":
        raise NotFoundError(f"No dashboard asset named {asset[:64]!r}.")
    return _static(asset)
