"""The account's quota with the real CLI: a subscription (OAuth) login turns the fake
upstream's ``anthropic-ratelimit-unified-*`` headers into rate-limit events; the proxy keeps
the latest, serves it, and fails fast while the account is limited.  An API-key login
reports nothing, whatever the upstream's headers say."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.conftest import make_settings
from tests.integration.test_observability import scrape, total
from tests.support.fake_upstream import QUOTA_RESET_S, FakeUpstream
from tests.support.procs import wait_until
from tests.support.server import RunningServer, serve

OAUTH_TOKEN = "sk-ant-oat01-fake-subscription-token"


@pytest.fixture()
def subscriber(monkeypatch: pytest.MonkeyPatch, cli_env: Path) -> Iterator[RunningServer]:
    """A proxy whose CLI is logged in with a subscription token (no API key)."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN)
    with serve(make_settings()) as running:
        yield running


def quota(server: RunningServer) -> dict[str, object]:
    response = httpx.get(f"{server.url}/v1/usage/quota", timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_a_subscription_login_reports_its_windows_and_fails_fast_when_limited(
    subscriber: RunningServer, upstream: FakeUpstream
) -> None:
    server = subscriber
    assert quota(server)["reported"] is False
    claude = anthropic.Anthropic(base_url=server.url, api_key="anything", max_retries=0,
                                 _strict_response_validation=True)
    gpt = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="anything", max_retries=0,
                        _strict_response_validation=True)
    # The CLI sends the state just after the answer's end; the proxy reads it while the
    # finished CLI is torn down, so a slow CLI can miss that moment: ask again until it lands.
    for _ in range(5):
        claude.messages.create(model="sonnet", max_tokens=20,
                               messages=[{"role": "user", "content": "hi [[quota:allowed_warning:0.85]]"}])
        if wait_until(lambda: quota(server)["reported"] is True, timeout=1):
            break
    assert upstream.messages_calls[-1].headers["authorization"] == f"Bearer {OAUTH_TOKEN}"
    seen = quota(server)
    assert seen["limited"] is False and seen["window"] == "five_hour"
    windows = seen["windows"]
    assert isinstance(windows, dict)
    assert windows["five_hour"]["utilization"] == pytest.approx(0.85)
    assert windows["seven_day"]["utilization"] == pytest.approx(0.1)
    assert abs(windows["five_hour"]["resets_at"] - (time.time() + QUOTA_RESET_S)) < 120
    assert seen["overage"] == {"status": "rejected", "in_use": False, "resets_at": None,
                               "disabled_reason": "out_of_credits"}
    login = seen["login"]
    assert isinstance(login, dict) and login["logged_in"] is True
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["quota"]["windows"] == windows
    samples = scrape(server.url)
    assert total(samples, "claude_proxy_quota_window_utilization", window="five_hour") == pytest.approx(0.85)
    assert total(samples, "claude_proxy_quota_limited") == 0

    # The plan's limit is reached: the upstream refuses, the CLI reports it.
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(model="sonnet", max_tokens=20,
                               messages=[{"role": "user", "content": "hi [[quota:rejected:1.0]]"}])
    assert abs(int(refused.value.response.headers["retry-after"]) - QUOTA_RESET_S) < 120
    limited = quota(server)
    assert limited["limited"] is True and limited["status"] == "rejected"

    # From now on nothing starts: 429 at once, with the reset time, on both surfaces.
    calls, spawned = len(upstream.messages_calls), server.app.state.backend.spawned  # type: ignore[attr-defined]
    with pytest.raises(anthropic.RateLimitError) as fast:
        claude.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert "5-hour limit is reached" in str(fast.value)
    assert abs(int(fast.value.response.headers["retry-after"]) - QUOTA_RESET_S) < 120
    with pytest.raises(openai.RateLimitError) as fast_openai:
        gpt.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "resets at" in str(fast_openai.value)
    assert len(upstream.messages_calls) == calls, "a limited account must not reach upstream"
    assert server.app.state.backend.spawned == spawned, "a limited account must not start a CLI"  # type: ignore[attr-defined]
    assert total(scrape(server.url), "claude_proxy_quota_limited") == 1


def test_an_api_key_login_reports_no_quota_even_with_the_headers(server: RunningServer, upstream: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="anything", max_retries=0)
    client.messages.create(model="sonnet", max_tokens=20,
                           messages=[{"role": "user", "content": "hi [[quota:allowed_warning:0.9]]"}])
    assert upstream.messages_calls, "the request reached upstream"
    seen = quota(server)
    assert seen["reported"] is False and seen["limited"] is False
    assert "API key" in str(seen["note"])
