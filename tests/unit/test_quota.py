"""The quota report and the fail-fast rule, with a fixed clock (the refusal through the app:
tests/api/test_quota_api.py)."""

from __future__ import annotations

from typing import Any

import pytest

from claude_code_proxy.backend.base import CliStatus
from claude_code_proxy.backend.quota import account_limited_error, report

NOW = 1_800_000_000.0


def state(status: str, resets_in: float, **extra: Any) -> dict[str, Any]:
    return {"status": status, "type": "seven_day", "resets_at": NOW + resets_in, "utilization": 1.0,
            "overage_status": "allowed", "overage_resets_at": None, "overage_disabled_reason": None,
            "using_overage": False, "windows": {}, "reported_at": NOW - 5, **extra}


def test_only_a_rejected_state_with_a_reset_ahead_refuses() -> None:
    assert account_limited_error(None, NOW) is None
    assert account_limited_error(state("allowed_warning", 60), NOW) is None
    assert account_limited_error(state("rejected", -1), NOW) is None  # the window has reset since
    refused = account_limited_error(state("rejected", 7200), NOW)
    assert refused is not None and refused.status_code == 429
    assert refused.retry_after == pytest.approx(7200)
    assert "weekly limit is reached" in refused.message and "UTC" in refused.message


def test_the_report_for_each_login() -> None:
    subscriber = CliStatus(found=True, path="claude", logged_in=True, auth_method="claude.ai",
                           subscription_type="max")
    api_key = CliStatus(found=True, path="claude", logged_in=True, auth_method="api_key")
    assert report(None, api_key, NOW)["note"].startswith("This login is an API key")
    assert report(None, subscriber, NOW) == {
        "login": {"auth_method": "claude.ai", "subscription_type": "max", "logged_in": True},
        "reported": False, "limited": False,
        "note": "No rate-limit state reported yet: the CLI reports it with the answers to requests."}
    limited = report(state("rejected", 90, windows={"seven_day": {"status": "rejected", "utilization": 1.0,
                                                                  "resets_at": NOW + 90}}), subscriber, NOW)
    assert limited["limited"] is True and limited["retry_after"] == 90 and limited["window_name"] == "weekly"
    assert limited["windows"]["seven_day"]["resets_at_iso"].endswith("Z")
    assert limited["overage"]["status"] == "allowed"
