"""Observability end to end: real uvicorn -> real bundled CLI -> the fake upstream, then
``/metrics`` (Prometheus text), ``/health`` (rate limit, login) and the JSON log lines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_settings
from tests.support.fake_cli import make_ratelimit_cli
from tests.support.procs import wait_until
from tests.support.proxy_process import proxy_process
from tests.support.server import RunningServer, serve

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture(scope="module")
def own_server(cli_env: Path) -> Iterator[RunningServer]:
    """A server of its own, so its counters start at zero whatever ran before."""
    with serve(make_settings()) as running:
        yield running


def test_metrics_count_requests_tokens_and_latency_on_both_surfaces(own_server: RunningServer) -> None:
    url = own_server.url
    before = scrape(url)
    assert total(before, "claude_proxy_requests_total") == 0

    claude = anthropic.Anthropic(base_url=url, api_key="anything", max_retries=0)
    gpt = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="anything", max_retries=0)
    tokens = {"input": 0, "output": 0, "cache_read": 0}

    def add_anthropic(usage: Any) -> None:
        tokens["input"] += usage.input_tokens
        tokens["output"] += usage.output_tokens
        tokens["cache_read"] += usage.cache_read_input_tokens or 0
        assert not usage.cache_creation_input_tokens

    def add_openai(usage: Any) -> None:
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
        tokens["input"] += usage.prompt_tokens - cached  # OpenAI's prompt tokens include cached ones
        tokens["output"] += usage.completion_tokens
        tokens["cache_read"] += cached

    user: Any = [{"role": "user", "content": "hi [[cache:5]]"}]
    add_anthropic(claude.messages.create(model="sonnet", max_tokens=50, messages=user).usage)
    with claude.messages.stream(model="sonnet", max_tokens=50, messages=user) as stream:
        add_anthropic(stream.get_final_message().usage)
    add_openai(gpt.chat.completions.create(model="sonnet", messages=user).usage)
    chunks = list(gpt.chat.completions.create(model="sonnet", messages=user, stream=True,
                                              stream_options={"include_usage": True}))
    add_openai(chunks[-1].usage)
    # Failures: one before any CLI (bad body), one from upstream (429, the CLI runs 0 retries).
    assert httpx.post(f"{url}/v1/messages", json={"model": "sonnet", "messages": user}).status_code == 400
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="sonnet", max_tokens=50, messages=[{"role": "user", "content": "[[error:429]]"}])

    after = scrape(url)
    anthropic_route = {"route": "/v1/messages", "surface": "anthropic"}
    openai_route = {"route": "/openai/v1/chat/completions", "surface": "openai"}
    assert total(after, "claude_proxy_requests_total", **anthropic_route, status="200") == 2
    assert total(after, "claude_proxy_requests_total", **anthropic_route, status="400") == 1
    assert total(after, "claude_proxy_requests_total", **anthropic_route, status="429") == 1
    assert total(after, "claude_proxy_requests_total", **openai_route, status="200") == 2
    assert total(after, "claude_proxy_requests_total") == 6

    assert tokens["input"] > 0 and tokens["output"] > 0 and tokens["cache_read"] == 20
    for kind, expected in tokens.items():
        assert total(after, "claude_proxy_tokens_total", kind=kind) == expected, kind
    assert total(after, "claude_proxy_tokens_total", kind="cache_creation") == 0
    assert total(after, "claude_proxy_cost_usd_total") >= 0

    for streamed in ("true", "false"):
        for route in (anthropic_route, openai_route):
            assert total(after, "claude_proxy_time_to_first_token_seconds_count", **route, stream=streamed) == 1
    assert total(after, "claude_proxy_request_duration_seconds_count") == 6
    assert total(after, "claude_proxy_request_duration_seconds_sum") > 0

    # Only the failure that reached the CLI is an upstream error.
    assert total(after, "claude_proxy_upstream_errors_total") == 1
    assert total(after, "claude_proxy_upstream_errors_total", kind="rate_limit_error") == 1

    # Nothing runs now (a CLI counts until it is reaped, a few ms after its answer).
    assert wait_until(lambda: total(scrape(own_server.url), "claude_proxy_cli_processes_running") == 0)
    assert total(after, "claude_proxy_queue_waiting") == 0
    assert total(after, "claude_proxy_cli_processes_limit") >= 1
    assert total(after, "claude_proxy_cli_spawned_total") == own_server.app.state.backend.spawned >= 5  # type: ignore[attr-defined]


def test_cli_processes_gauge_sees_a_running_request(own_server: RunningServer) -> None:
    with httpx.stream("POST", f"{own_server.url}/v1/messages", timeout=60, json={
        "model": "sonnet", "max_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "[[slow:3]] one two three four five six"}],
    }) as response:
        lines = response.iter_lines()  # held: a dropped iterator would close the stream early
        for line in lines:
            if "content_block_delta" in line:
                break
        assert total(scrape(own_server.url), "claude_proxy_cli_processes_running") == 1
        assert "message_stop" in "".join(lines)
    assert wait_until(lambda: total(scrape(own_server.url), "claude_proxy_cli_processes_running") == 0), \
        "the running gauge never went back to 0"


def test_metrics_need_the_api_key_when_one_is_set(cli_env: Path) -> None:
    with serve(make_settings(api_key="scrape-secret")) as running:
        assert httpx.get(f"{running.url}/metrics").status_code == 401
        assert httpx.get(f"{running.url}/metrics", headers={"x-api-key": "wrong"}).status_code == 401
        assert total(scrape(running.url, authorization="Bearer scrape-secret"), "claude_proxy_build_info") == 1
        assert httpx.get(f"{running.url}/health").status_code == 200  # /health stays public


def test_health_shows_the_rate_limit_the_cli_reported(tmp_path: Path) -> None:
    cli, resets_at = make_ratelimit_cli(tmp_path / "warning", "warning")
    with serve(make_settings(cli_path=str(cli))) as running:
        health = httpx.get(f"{running.url}/health").json()
        assert health["rate_limit"] is None  # nothing reported yet
        assert health["cli"]["logged_in"] is True
        assert health["cli"]["auth_method"] == "claude.ai" and health["cli"]["subscription_type"] == "max"

        client = anthropic.Anthropic(base_url=running.url, api_key="anything", max_retries=0)
        message = client.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        assert message.content[0].text == "tok0 tok1 tok2 "  # type: ignore[union-attr]

        rate_limit = httpx.get(f"{running.url}/health").json()["rate_limit"]
        assert rate_limit["status"] == "allowed_warning" and rate_limit["type"] == "five_hour"
        assert rate_limit["resets_at"] == resets_at and rate_limit["utilization"] == pytest.approx(0.8)
        assert rate_limit["reported_at"] == pytest.approx(time.time(), abs=60)

        samples = scrape(running.url)
        assert total(samples, "claude_proxy_rate_limit_status", type="five_hour", status="allowed_warning") == 1
        assert total(samples, "claude_proxy_rate_limit_utilization", type="five_hour") == pytest.approx(0.8)
        # The cost figure follows the answer by a few milliseconds (the CLI's result).
        assert wait_until(lambda: total(scrape(running.url), "claude_proxy_cost_usd_total") == pytest.approx(0.0001))


def test_a_rejected_rate_limit_is_a_429_that_health_explains(tmp_path: Path) -> None:
    cli, resets_at = make_ratelimit_cli(tmp_path / "rejected", "rejected")
    with serve(make_settings(cli_path=str(cli))) as running:
        client = anthropic.Anthropic(base_url=running.url, api_key="anything", max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        retry_after = float(info.value.response.headers["retry-after"])
        assert 3500 < retry_after <= 3600  # waits for the window's reset
        health = httpx.get(f"{running.url}/health").json()
        assert health["rate_limit"]["status"] == "rejected" and health["rate_limit"]["resets_at"] == resets_at
        samples = scrape(running.url)
        assert total(samples, "claude_proxy_upstream_errors_total", kind="rate_limit_error") == 1
        assert total(samples, "claude_proxy_rate_limit_status", status="rejected") == 1


# -- logs -----------------------------------------------------------------------------------------

CANARY = "CANARY-PROMPT-5d1e"
LOG_FIELDS = {"request_id", "route", "model", "status", "duration_ms", "ttft_ms", "input_tokens", "output_tokens",
              "cache_read_tokens", "cache_creation_tokens", "cost_usd"}


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_request_id_is_echoed_and_every_request_logs_one_json_line(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"CLAUDE_PROXY_LOG_FORMAT": "json", "CLAUDE_PROXY_LOG_LEVEL": "INFO"}
    with proxy_process(tmp_path, env=env) as proxy:
        user = [{"role": "user", "content": f"{CANARY} [[cache:3]]"}]
        sent = httpx.post(f"{proxy.url}/v1/messages", timeout=60, headers={"x-request-id": "obs-plain-1"},
                          json={"model": "sonnet", "max_tokens": 50, "messages": user})
        assert sent.status_code == 200 and sent.headers["x-request-id"] == "obs-plain-1"
        with httpx.stream("POST", f"{proxy.url}/openai/v1/chat/completions", timeout=60,
                          headers={"x-request-id": "obs-stream-2"},
                          json={"model": "sonnet", "stream": True, "messages": user}) as streamed:
            assert streamed.headers["x-request-id"] == "obs-stream-2"
            body = "".join(streamed.iter_text())
        assert "[DONE]" in body
        generated = httpx.post(f"{proxy.url}/v1/messages", timeout=60, json={"model": "sonnet", "messages": user})
        assert generated.status_code == 400 and generated.headers["x-request-id"].startswith("req_")
        usage = sent.json()["usage"]

        wanted = {"obs-plain-1", "obs-stream-2", generated.headers["x-request-id"]}

        def logged() -> dict[Any, Any]:
            lines = json_lines(proxy.logs())
            return {line.get("request_id"): line for line in lines if line.get("event") == "request"}

        assert wait_until(lambda: wanted <= set(logged())), proxy.logs()
        by_id = logged()
        lines = json_lines(proxy.logs())

        plain = by_id["obs-plain-1"]
        assert LOG_FIELDS <= set(plain), set(plain)
        assert plain["route"] == "/v1/messages" and plain["model"] == "sonnet" and plain["status"] == 200
        assert plain["level"] == "info" and plain["timestamp"]
        assert plain["input_tokens"] == usage["input_tokens"] and plain["output_tokens"] == usage["output_tokens"]
        assert plain["cache_read_tokens"] == usage["cache_read_input_tokens"] == 3
        assert plain["duration_ms"] > 0 and plain["ttft_ms"] is not None and plain["ttft_ms"] <= plain["duration_ms"]
        assert plain["cost_usd"] is None or plain["cost_usd"] >= 0
        assert plain["error"] is None

        stream_line = by_id["obs-stream-2"]
        assert LOG_FIELDS <= set(stream_line)
        assert stream_line["route"] == "/openai/v1/chat/completions" and stream_line["stream"] is True
        assert stream_line["status"] == 200 and stream_line["ttft_ms"] is not None
        assert stream_line["output_tokens"] > 0

        refused = by_id[generated.headers["x-request-id"]]
        # Refused before its model was read: the metadata that exists, no model fields.
        assert refused["status"] == 400 and refused["route"] == "/v1/messages" and refused["duration_ms"] >= 0

        # One line per request, and nothing the user typed, at INFO.
        assert sum(1 for line in lines if line.get("request_id") == "obs-plain-1" and line["event"] == "request") == 1
        assert CANARY not in proxy.logs()
