"""Prometheus metrics for one app: counters and histograms fed per request, gauges read at scrape.

Each app owns a ``CollectorRegistry`` (never the library's global one), kept as
``app.state.prom``, a ``ProxyMetrics``.  Its ``record`` method is a request recorder (see
``ops/metrics.py``): it runs once per model request when the request's log line is written,
so the counters always agree with the log and the usage ledger.  ``GET /metrics``
(``ops/metrics_route.py``) renders the registry.

Other components report through small methods rather than touching the collectors:

    app.state.prom.warm_hit(model)    a request took a pre-started CLI from the warm pool
    app.state.prom.warm_miss(model)   a request found none and started a CLI itself

Label values that come from clients or upstream (model names) are bounded: a name the model
catalog does not know is counted as ``other``, and beyond ``MAX_MODELS`` distinct models
further ones are too, so neither can grow the registry without end.
Nothing here holds prompt or answer text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from claude_code_proxy import __version__
from claude_code_proxy.backend.admission import Admission
from claude_code_proxy.backend.base import Backend
from claude_code_proxy.backend.quota import limited_until
from claude_code_proxy.ops.metrics import RequestMetrics

# The classic text format (what ``generate_latest`` writes for legacy metric names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "claude_proxy"
MAX_MODELS = 64
OTHER = "other"
NO_KEY = "-"
"""The ``key`` label of requests made without an API key (no key name can start with "-")."""

# Whole answers take seconds to minutes; first tokens arrive in well under a minute.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)

# RequestMetrics.usage key -> the ``kind`` label of the tokens counter.
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_creation",
}


# Refusals decided by the proxy before anything ran: not upstream errors.
_NOT_UPSTREAM = frozenset({"key_limit", "account_limited"})


class _BackendCollector(Collector):
    """Gauges read from admission and the backend at scrape time."""

    def __init__(self, backend: Callable[[], Backend], admission: Admission) -> None:
        self._backend = backend
        self._admission = admission

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration; collect() reads the live backend

    def collect(self) -> Iterable[Metric]:
        admission = self._admission
        stats = self._backend().stats()
        running = GaugeMetricFamily(f"{PREFIX}_cli_processes_running",
                                    "Claude Code CLI processes serving a request now.")
        running.add_metric([], admission.active)
        yield running
        waiting = GaugeMetricFamily(f"{PREFIX}_queue_waiting", "Requests waiting for a free CLI slot.")
        waiting.add_metric([], admission.waiting)
        yield waiting
        limit = GaugeMetricFamily(f"{PREFIX}_cli_processes_limit",
                                  "The most CLI processes that may serve requests at once.")
        limit.add_metric([], admission.limit)
        yield limit
        started = CounterMetricFamily(f"{PREFIX}_cli_spawned", "Claude Code CLI processes started since launch.")
        started.add_metric([], stats.spawned)
        yield started
        ready = GaugeMetricFamily(f"{PREFIX}_warm_pool_ready", "Pre-started CLI processes ready in the warm pool.")
        ready.add_metric([], stats.warm_ready)
        yield ready
        rate_limit = stats.rate_limit
        if rate_limit is not None:
            kind, status = str(rate_limit.get("type") or "unknown"), str(rate_limit.get("status") or "unknown")
            info = GaugeMetricFamily(f"{PREFIX}_rate_limit_status",
                                     "The subscription's latest rate-limit state the CLI reported (always 1).",
                                     labels=["type", "status"])
            info.add_metric([kind[:64], status[:64]], 1)
            yield info
            utilization = rate_limit.get("utilization")
            if isinstance(utilization, int | float):
                used = GaugeMetricFamily(f"{PREFIX}_rate_limit_utilization",
                                         "Fraction of the rate-limit window used (0-1), as the CLI reported it.",
                                         labels=["type"])
                used.add_metric([kind[:64]], float(utilization))
                yield used
            yield from _quota_gauges(rate_limit)


def _quota_gauges(rate_limit: dict[str, Any]) -> Iterable[Metric]:
    """The account's plan windows, reset times and overage state (backend/quota.py)."""
    limited = GaugeMetricFamily(f"{PREFIX}_quota_limited",
                                "1 while the account's plan limit is reached (requests fail fast with 429).")
    limited.add_metric([], 1.0 if limited_until(rate_limit, time.time()) is not None else 0.0)
    yield limited
    windows = {str(k)[:32]: w for k, w in (rate_limit.get("windows") or {}).items()}
    kind = str(rate_limit.get("type") or "unknown")[:32]
    if kind not in windows:
        windows[kind] = {"utilization": rate_limit.get("utilization"), "resets_at": rate_limit.get("resets_at")}
    used = GaugeMetricFamily(f"{PREFIX}_quota_window_utilization",
                             "Fraction of each plan window used (0-1), as the CLI last reported it.", labels=["window"])
    resets = GaugeMetricFamily(f"{PREFIX}_quota_window_resets_at_seconds",
                               "When each plan window resets (Unix time).", labels=["window"])
    for name, window in sorted(windows.items()):
        if isinstance(window.get("utilization"), int | float):
            used.add_metric([name], float(window["utilization"]))
        if isinstance(window.get("resets_at"), int | float):
            resets.add_metric([name], float(window["resets_at"]))
    yield used
    yield resets
    overage = rate_limit.get("overage_status")
    if overage:
        info = GaugeMetricFamily(f"{PREFIX}_quota_overage_status",
                                 "The account's extra-usage (overage) state (always 1).", labels=["status"])
        info.add_metric([str(overage)[:32]], 1.0)
        yield info


class ProxyMetrics:
    """The app's Prometheus registry, its collectors, and the request recorder that feeds them."""

    def __init__(
        self,
        model_routes: frozenset[str],
        backend: Callable[[], Backend] | None = None,
        admission: Admission | None = None,
        known_model: Callable[[str], str | None] | None = None,
    ) -> None:
        self.model_routes = model_routes
        self.known_model = known_model
        """The catalog's name for a model, or None: anything else is counted as ``other``."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._models: set[str] = set()
        self._lock = threading.Lock()
        r = self.registry
        self.build = Info(f"{PREFIX}_build", "The proxy's version.", registry=r)
        self.build.info({"version": __version__})
        self.requests = Counter(f"{PREFIX}_requests", "Model requests answered, by route and HTTP status.",
                                ["route", "surface", "status"], registry=r)
        self.latency = Histogram(f"{PREFIX}_request_duration_seconds",
                                 "Model request duration, until the last byte of the answer.",
                                 ["route", "surface", "stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds",
                              "Time from the request's arrival to the answer's first token.",
                              ["route", "surface", "stream"], buckets=TTFT_BUCKETS, registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens reported by the upstream API, by model and kind.",
                              ["model", "kind"], registry=r)
        self.cost = Counter(f"{PREFIX}_cost_usd", "Cost reported by the Claude Code CLI, in US dollars, by model.",
                            ["model"], registry=r)
        self.upstream_errors = Counter(f"{PREFIX}_upstream_errors",
                                       "Model requests that failed once they reached the CLI, by error kind.",
                                       ["kind"], registry=r)
        self.warm_hits = Counter(f"{PREFIX}_warm_pool_hits", "Requests served by a pre-started CLI, by model.",
                                 ["model"], registry=r)
        self.warm_misses = Counter(f"{PREFIX}_warm_pool_misses",
                                   "Requests that found no pre-started CLI and started one, by model.",
                                   ["model"], registry=r)
        # Per API key: key names come from whoever runs the proxy, never from clients.
        self.key_requests = Counter(f"{PREFIX}_key_requests", "Model requests answered, by API key name and status.",
                                    ["key", "status"], registry=r)
        self.key_tokens = Counter(f"{PREFIX}_key_tokens", "Tokens reported by the upstream API, by API key name.",
                                  ["key", "kind"], registry=r)
        self.key_cost = Counter(f"{PREFIX}_key_cost_usd", "Cost reported by the Claude Code CLI, by API key name.",
                                ["key"], registry=r)
        self.key_limited = Counter(f"{PREFIX}_key_limited", "Requests refused by their API key's own limits.",
                                   ["key"], registry=r)
        if backend is not None and admission is not None:
            r.register(_BackendCollector(backend, admission))

    # -- for other components --------------------------------------------------------
    def warm_hit(self, model: str) -> None:
        self.warm_hits.labels(model=self.model_label(model)).inc()

    def warm_miss(self, model: str) -> None:
        self.warm_misses.labels(model=self.model_label(model)).inc()

    # -- the request recorder --------------------------------------------------------
    def record(self, metrics: RequestMetrics) -> None:
        """A ``Recorder``: count one finished model request."""
        route = metrics.route if metrics.route in self.model_routes else OTHER
        surface = metrics.surface
        stream = "true" if metrics.stream else "false"
        self.requests.labels(route=route, surface=surface, status=str(metrics.status)).inc()
        self.latency.labels(route=route, surface=surface, stream=stream).observe(max(metrics.duration_ms, 0.0) / 1000)
        if metrics.ttft_ms is not None:
            self.ttft.labels(route=route, surface=surface, stream=stream).observe(max(metrics.ttft_ms, 0.0) / 1000)
        model = self.model_label(metrics.model_shown)
        for key, kind in TOKEN_KINDS.items():
            count = metrics.usage.get(key, 0)
            if count > 0:
                self.tokens.labels(model=model, kind=kind).inc(count)
        if metrics.cost_usd is not None and metrics.cost_usd > 0:
            self.cost.labels(model=model).inc(metrics.cost_usd)
        self._record_key(metrics)
        # model_resolved is set once the request is parsed and its model resolved, just before the
        # backend runs (model_used once a model answered): an error after that came from the run
        # (CLI, upstream, queue, client gone), not from a malformed request.
        if (metrics.error_kind is not None and (metrics.model_resolved or metrics.model_used)
                and metrics.error_kind not in _NOT_UPSTREAM):
            self.upstream_errors.labels(kind=metrics.error_kind[:64]).inc()

    def _record_key(self, metrics: RequestMetrics) -> None:
        key = metrics.key_name or NO_KEY
        self.key_requests.labels(key=key, status=str(metrics.status)).inc()
        for usage_key, kind in TOKEN_KINDS.items():
            count = metrics.usage.get(usage_key, 0)
            if count > 0:
                self.key_tokens.labels(key=key, kind=kind).inc(count)
        if metrics.cost_usd is not None and metrics.cost_usd > 0:
            self.key_cost.labels(key=key).inc(metrics.cost_usd)
        if metrics.error_kind == "key_limit":
            self.key_limited.labels(key=key).inc()

    def model_label(self, model: str) -> str:
        """A bounded label value for a model name: the catalog's name, or ``other`` (upstream
        may report any name at all)."""
        model = (model or "unknown")[:128]
        if self.known_model is not None:
            model = self.known_model(model) or OTHER
        with self._lock:
            if model in self._models:
                return model
            if len(self._models) >= MAX_MODELS:
                return OTHER
            self._models.add(model)
            return model


__all__ = ["CONTENT_TYPE", "ProxyMetrics"]
