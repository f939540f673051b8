"""The Prometheus recorder and registry, fed with hand-built RequestMetrics."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from claude_code_proxy.app import create_app
from claude_code_proxy.backend.admission import Admission
from claude_code_proxy.backend.base import BackendStats, CliStatus
from claude_code_proxy.backend.scripted import ScriptedBackend
from claude_code_proxy.ops.metrics import RequestMetrics
from claude_code_proxy.ops.prometheus import CONTENT_TYPE, MAX_MODELS, ProxyMetrics
from tests.conftest import make_settings

MODEL_ROUTES = frozenset({"/v1/messages", "/v1/chat/completions", "/openai/v1/chat/completions"})


def request(**values: Any) -> RequestMetrics:
    base: dict[str, Any] = {"request_id": "req_test", "route": "/v1/messages", "method": "POST",
                            "client": "test", "surface": "anthropic"}
    status = values.pop("status", 200)
    metrics = RequestMetrics(**{**base, **values})
    metrics.status = status
    return metrics


def answered(**values: Any) -> RequestMetrics:
    """A successful model request as the routes leave it."""
    defaults: dict[str, Any] = {
        "model_requested": "sonnet", "model_used": "claude-sonnet-4-5", "ttft_ms": 250.0, "duration_ms": 1200.0,
        "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 7,
                  "cache_creation_input_tokens": 2},
        "cost_usd": 0.0125,
    }
    return request(**{**defaults, **values})


def samples(prom: ProxyMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered text, parsed back: {(name, labels): value}."""
    text = generate_latest(prom.registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(prom: ProxyMetrics, name: str, **labels: str) -> float | None:
    return samples(prom).get((name, frozenset(labels.items())))


def test_request_counts_by_route_surface_and_status() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    prom.record(answered())
    prom.record(answered())
    prom.record(answered(route="/openai/v1/chat/completions", surface="openai", status=429))
    assert value(prom, "claude_proxy_requests_total", route="/v1/messages", surface="anthropic", status="200") == 2
    assert value(prom, "claude_proxy_requests_total", route="/openai/v1/chat/completions", surface="openai",
                 status="429") == 1


def test_unknown_routes_share_one_label() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    prom.record(answered(route="/v1/messages/../../x%0aevil"))
    assert value(prom, "claude_proxy_requests_total", route="other", surface="anthropic", status="200") == 1


def test_latency_and_ttft_histograms_in_seconds() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    prom.record(answered(duration_ms=1200.0, ttft_ms=250.0))
    prom.record(answered(duration_ms=40.0, ttft_ms=None, stream=True))  # failed before any token
    labels = {"route": "/v1/messages", "surface": "anthropic", "stream": "false"}
    assert value(prom, "claude_proxy_request_duration_seconds_count", **labels) == 1
    assert value(prom, "claude_proxy_request_duration_seconds_sum", **labels) == pytest.approx(1.2)
    assert value(prom, "claude_proxy_request_duration_seconds_bucket", **labels, le="1.0") == 0
    assert value(prom, "claude_proxy_request_duration_seconds_bucket", **labels, le="2.5") == 1
    assert value(prom, "claude_proxy_time_to_first_token_seconds_count", **labels) == 1
    assert value(prom, "claude_proxy_time_to_first_token_seconds_sum", **labels) == pytest.approx(0.25)
    streamed = {**labels, "stream": "true"}
    assert value(prom, "claude_proxy_request_duration_seconds_count", **streamed) == 1
    assert value(prom, "claude_proxy_time_to_first_token_seconds_count", **streamed) is None


def test_tokens_by_model_and_kind_and_cost() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    prom.record(answered())
    prom.record(answered(usage={"input_tokens": 5, "output_tokens": 1}, cost_usd=0.0025))
    model = "claude-sonnet-4-5"
    assert value(prom, "claude_proxy_tokens_total", model=model, kind="input") == 15
    assert value(prom, "claude_proxy_tokens_total", model=model, kind="output") == 5
    assert value(prom, "claude_proxy_tokens_total", model=model, kind="cache_read") == 7
    assert value(prom, "claude_proxy_tokens_total", model=model, kind="cache_creation") == 2
    assert value(prom, "claude_proxy_cost_usd_total", model=model) == pytest.approx(0.015)


def test_no_usage_and_no_cost_add_nothing() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    prom.record(answered(usage={}, cost_usd=None))
    names = {name for name, _ in samples(prom)}
    assert "claude_proxy_tokens_total" not in names and "claude_proxy_cost_usd_total" not in names


def test_upstream_errors_by_kind_only_once_the_request_reached_the_cli() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    prom.record(answered(error_kind="rate_limit_error", status=429, usage={}, cost_usd=None))
    prom.record(answered(error_kind="client_disconnected", usage={}, cost_usd=None))
    prom.record(answered(error_kind="overloaded_error", status=529, usage={}, cost_usd=None))
    # Resolved and handed to the CLI, but no model answered: still the run's failure.
    prom.record(request(model_requested="gpt-4o", model_resolved="sonnet", error_kind="timeout_error", status=504))
    # A malformed request fails before any model is resolved: the client's fault, not upstream's.
    prom.record(request(error_kind="invalid_request_error", status=400, duration_ms=2.0))
    prom.record(request(model_requested="claude-nope", error_kind="not_found_error", status=404))
    assert value(prom, "claude_proxy_upstream_errors_total", kind="rate_limit_error") == 1
    assert value(prom, "claude_proxy_upstream_errors_total", kind="client_disconnected") == 1
    assert value(prom, "claude_proxy_upstream_errors_total", kind="overloaded_error") == 1
    assert value(prom, "claude_proxy_upstream_errors_total", kind="timeout_error") == 1
    assert value(prom, "claude_proxy_upstream_errors_total", kind="invalid_request_error") is None
    assert value(prom, "claude_proxy_upstream_errors_total", kind="not_found_error") is None
    # ...but every request is still counted by its status.
    assert value(prom, "claude_proxy_requests_total", route="/v1/messages", surface="anthropic", status="400") == 1


def test_warm_pool_hits_and_misses() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    names = {family.name for family in text_string_to_metric_families(generate_latest(prom.registry).decode())}
    assert {"claude_proxy_warm_pool_hits", "claude_proxy_warm_pool_misses"} <= names  # present before use
    prom.warm_hit("sonnet")
    prom.warm_hit("sonnet")
    prom.warm_miss("opus")
    assert value(prom, "claude_proxy_warm_pool_hits_total", model="sonnet") == 2
    assert value(prom, "claude_proxy_warm_pool_misses_total", model="opus") == 1


def test_model_labels_are_bounded() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    for i in range(MAX_MODELS + 10):
        prom.record(answered(model_used=f"claude-x-{i}"))
    models = {dict(labels)["model"] for name, labels in samples(prom) if name == "claude_proxy_tokens_total"}
    assert len(models) == MAX_MODELS + 1
    assert value(prom, "claude_proxy_tokens_total", model="other", kind="input") == 10 * 10
    assert prom.model_label("x" * 1000) == "other"


def test_backend_gauges_are_read_at_scrape_time() -> None:
    admission = Admission(4, 8, 1.0)
    stats = BackendStats(spawned=5, warm_ready=1)
    backend = SimpleNamespace(stats=lambda: stats)
    prom = ProxyMetrics(MODEL_ROUTES, backend=lambda: backend, admission=admission)  # type: ignore[arg-type,return-value]
    assert value(prom, "claude_proxy_cli_processes_running") == 0
    admission.active, admission.waiting = 3, 2
    assert value(prom, "claude_proxy_cli_processes_running") == 3
    assert value(prom, "claude_proxy_queue_waiting") == 2
    assert value(prom, "claude_proxy_cli_processes_limit") == 4
    assert value(prom, "claude_proxy_warm_pool_ready") == 1
    assert value(prom, "claude_proxy_cli_spawned_total") == 5
    assert not any(name.startswith("claude_proxy_rate_limit") for name, _ in samples(prom))
    stats = BackendStats(spawned=5, warm_ready=1, rate_limit={
        "status": "allowed_warning", "type": "five_hour", "utilization": 0.8, "resets_at": 1})
    assert value(prom, "claude_proxy_rate_limit_status", type="five_hour", status="allowed_warning") == 1
    assert value(prom, "claude_proxy_rate_limit_utilization", type="five_hour") == pytest.approx(0.8)


def test_a_scripted_backend_reads_as_zero() -> None:
    prom = ProxyMetrics(MODEL_ROUTES, backend=lambda: ScriptedBackend(), admission=Admission(4, 8, 1.0))
    assert value(prom, "claude_proxy_cli_processes_running") == 0
    assert value(prom, "claude_proxy_queue_waiting") == 0
    assert value(prom, "claude_proxy_warm_pool_ready") == 0
    assert value(prom, "claude_proxy_cli_spawned_total") == 0
    assert not any(name.startswith("claude_proxy_rate_limit") for name, _ in samples(prom))


def test_each_app_has_its_own_registry_and_the_global_one_stays_clean() -> None:
    first, second = ProxyMetrics(MODEL_ROUTES), ProxyMetrics(MODEL_ROUTES)
    first.record(answered())
    assert value(first, "claude_proxy_requests_total", route="/v1/messages", surface="anthropic", status="200") == 1
    assert value(second, "claude_proxy_requests_total", route="/v1/messages", surface="anthropic", status="200") is None
    assert "claude_proxy" not in generate_latest(REGISTRY).decode()


def test_build_info() -> None:
    from claude_code_proxy import __version__
    assert value(ProxyMetrics(MODEL_ROUTES), "claude_proxy_build_info", version=__version__) == 1


def test_no_request_text_reaches_the_registry() -> None:
    prom = ProxyMetrics(MODEL_ROUTES)
    prom.record(answered(model_requested="CANARY-MODEL-TEXT", model_used="", client="CANARY-CLIENT"))
    text = generate_latest(prom.registry).decode()
    assert "CANARY-CLIENT" not in text and "req_test" not in text


# -- wired into the app -----------------------------------------------------------------------


def status_only_backend() -> ScriptedBackend:
    """A scripted backend that must never be asked for an answer: /metrics and /health work."""
    def no_model_call(request: object) -> list[Any]:
        raise AssertionError("no model call expected")

    return ScriptedBackend(no_model_call, CliStatus(found=True, path="/fake/claude", version="9.9.9",
                                                    logged_in=True, auth_method="claude.ai", subscription_type="max"))


def app_client(**settings: Any) -> TestClient:
    """The app in process (no socket), as a client on the loopback host it answers for."""
    return TestClient(create_app(make_settings(**settings), status_only_backend()), base_url="http://127.0.0.1")


def test_app_serves_metrics_and_health_with_a_scripted_backend() -> None:
    with app_client() as client:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-request-id"]
        families = {f.name for f in text_string_to_metric_families(response.text)}
        assert {"claude_proxy_requests", "claude_proxy_cli_processes_running", "claude_proxy_tokens"} <= families
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["rate_limit"] is None
        assert health["cli"]["logged_in"] is True and health["cli"]["subscription_type"] == "max"
        prom = client.app.state.prom  # type: ignore[attr-defined]
        assert isinstance(prom, ProxyMetrics)


def test_metrics_need_the_api_key_when_one_is_set() -> None:
    with app_client(api_key="metrics-secret") as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer metrics-secret"}).status_code == 200
        assert client.get("/metrics", headers={"x-api-key": "metrics-secret"}).status_code == 200
        assert client.get("/health").status_code == 200
