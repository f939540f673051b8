"""The account's plan limits, as the CLI reports them.  Pure: a rate-limit summary (see
``run_state.rate_limit_summary``) and the login in, a report or a refusal out.

With a subscription login (claude.ai / ``CLAUDE_CODE_OAUTH_TOKEN``) the CLI turns the
upstream's ``anthropic-ratelimit-unified-*`` headers into rate-limit events: a status
(``allowed``, ``allowed_warning``, ``rejected``), the window that applies (``five_hour``,
``seven_day``...), its reset time, utilization per window, and the overage (extra usage)
state.  It sends one when the state changes, so the latest one is the state now.

API-key logins are billed per token and have no plan windows: the CLI sends no such
events for them, and the report says so.  Each replica reports its own login.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from claude_code_proxy.backend.base import CliStatus
from claude_code_proxy.exceptions import AccountLimitedError

API_KEY_NOTE = (
    "This login is an API key: usage is billed per token and has no plan windows, and the Claude Code CLI "
    "reports no rate-limit state for it. The upstream API's own 429s still reach clients as 429."
)
NOT_YET_NOTE = "No rate-limit state reported yet: the CLI reports it with the answers to requests."
_WINDOW_NAMES = {"five_hour": "5-hour", "seven_day": "weekly", "seven_day_opus": "weekly Opus",
                 "seven_day_sonnet": "weekly Sonnet", "overage": "extra usage"}


def window_name(kind: str | None) -> str:
    return _WINDOW_NAMES.get(kind or "", (kind or "plan").replace("_", " "))


def iso(epoch: float | None) -> str | None:
    if not isinstance(epoch, int | float):
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat().replace("+00:00", "Z")


def limited_until(rate_limit: dict[str, Any] | None, now: float) -> float | None:
    """The reset time while the account is refused (status ``rejected``, reset ahead), else None."""
    if not rate_limit or rate_limit.get("status") != "rejected":
        return None
    resets_at = rate_limit.get("resets_at")
    if isinstance(resets_at, int | float) and resets_at > now:
        return float(resets_at)
    return None


def account_limited_error(rate_limit: dict[str, Any] | None, now: float | None = None) -> AccountLimitedError | None:
    """The refusal to give at once, instead of starting a CLI the upstream would refuse."""
    now = time.time() if now is None else now
    until = limited_until(rate_limit, now)
    if until is None:
        return None
    assert rate_limit is not None
    when = datetime.datetime.fromtimestamp(until, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return AccountLimitedError(
        f"The Claude account's {window_name(rate_limit.get('type'))} limit is reached; it resets at {when}.",
        retry_after=until - now,
    )


def report(rate_limit: dict[str, Any] | None, cli: CliStatus | None, now: float | None = None) -> dict[str, Any]:
    """What ``GET /v1/usage/quota`` answers."""
    now = time.time() if now is None else now
    login = {
        "auth_method": cli.auth_method if cli else None,
        "subscription_type": cli.subscription_type if cli else None,
        "logged_in": cli.logged_in if cli else None,
    }
    api_key = bool(cli and (cli.auth_method or "").lower() in ("api_key", "apikey", "api-key"))
    if rate_limit is None:
        return {"login": login, "reported": False, "limited": False,
                "note": API_KEY_NOTE if api_key else NOT_YET_NOTE}
    until = limited_until(rate_limit, now)
    windows = {
        name: {**window, "resets_at_iso": iso(window.get("resets_at"))}
        for name, window in (rate_limit.get("windows") or {}).items()
    }
    return {
        "login": login,
        "reported": True,
        "status": rate_limit.get("status"),
        "limited": until is not None,
        "retry_after": round(until - now) if until is not None else None,
        "window": rate_limit.get("type"),
        "window_name": window_name(rate_limit.get("type")),
        "utilization": rate_limit.get("utilization"),
        "resets_at": rate_limit.get("resets_at"),
        "resets_at_iso": iso(rate_limit.get("resets_at")),
        "overage": {
            "status": rate_limit.get("overage_status"),
            "in_use": rate_limit.get("using_overage"),
            "resets_at": rate_limit.get("overage_resets_at"),
            "disabled_reason": rate_limit.get("overage_disabled_reason"),
        },
        "windows": windows,
        "reported_at": rate_limit.get("reported_at"),
        "reported_at_iso": iso(rate_limit.get("reported_at")),
    }


__all__ = ["account_limited_error", "limited_until", "report", "window_name"]
