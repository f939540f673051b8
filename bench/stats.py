"""Pure statistics helpers: percentiles, summaries, and the issue's targets.

No I/O here, so tests/unit/test_bench.py checks these with plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default); None if empty."""
    data = sorted(float(v) for v in values)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    rank = (len(data) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return data[low]
    return data[low] + (data[high] - data[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """n, p50, p95, mean, min, max of a sample (None for an empty one)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "min": None, "max": None}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def difference(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return a - b


def per_time(completed: int | None, wall: float | None, unit: float | None) -> float | None:
    """Requests completed per ``unit`` seconds: ``completed / (wall / unit)``."""
    if completed is None:
        return None
    rate = ratio(float(completed), wall)
    return None if rate is None or unit is None else rate * unit


@dataclass(frozen=True)
class Target:
    """One target of the issue: ``value`` must be at most ``limit`` (at least, if ``minimum``)."""

    name: str
    value: float | None
    limit: float
    unit: str = ""
    minimum: bool = False

    @property
    def passed(self) -> bool:
        if self.value is None or math.isnan(self.value):
            return False
        return self.value >= self.limit if self.minimum else self.value <= self.limit

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"

    @property
    def bound(self) -> str:
        return f"{'>=' if self.minimum else '<='} {self.limit:g}{self.unit}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "bound": self.bound, "passed": self.passed, "verdict": self.verdict}


def evaluate_targets(
    *,
    direct_cold_p50: float | None,
    direct_reused_p50: float | None,
    proxy_warm_p50: float | None,
    proxy_cold_ttft_p50: float | None,
    proxy_warm_ttft_p50: float | None,
    cpu_s_per_request: float | None,
    per_cold_query: dict[int, float | None],
    errors: dict[int, int | None],
) -> list[Target]:
    """The targets of issue 18 (CLI reuse), from medians (seconds), CPU-seconds per request,
    and per client count: requests completed per direct cold query time, and errors."""
    gap = difference(proxy_warm_p50, direct_reused_p50)
    targets = [
        Target("warm non-streaming p50 / direct cold query p50", ratio(proxy_warm_p50, direct_cold_p50), 0.08, "x"),
        Target("warm TTFT p50 / cold TTFT p50", ratio(proxy_warm_ttft_p50, proxy_cold_ttft_p50), 0.08, "x"),
        Target("proxy warm p50 - direct reused SDK turn p50", None if gap is None else gap * 1000, 8.0, "ms"),
        Target("CPU per request, proxy + CLIs (sequential)", cpu_s_per_request, 0.045, " CPU-s"),
    ]
    for clients in (16, 64):
        targets.append(Target(f"{clients} clients: requests per direct cold query time",
                              per_cold_query.get(clients), 15.0, "", minimum=True))
        count = errors.get(clients)
        targets.append(Target(f"{clients} clients: errors", None if count is None else float(count), 0.0))
    return targets


# The floor, measured on a quiet 2-core machine with a plain SDK driver and no proxy.
FLOOR_REUSED_CPU_S = 0.022
"""CPU-seconds per request of one reused CLI (CLI + driver)."""
FLOOR_PARALLEL_PER_COLD_QUERY = 70 * 0.31
"""Two reused CLIs in parallel (70 req/s) times a direct cold query (~0.31 s)."""


def floor_relative(
    *,
    cpu_s_per_request: float | None,
    direct_reused_cpu_s: float | None,
    throughput_rps: dict[int, float | None],
    direct_parallel_rps: float | None,
) -> list[Target]:
    """The CPU and concurrency targets restated against the floor measured in the same run.

    On a loaded machine every CPU-second and every request per second is inflated or deflated
    alike for the proxy and for the plain SDK driver; the issue's absolute limits, divided by
    its own floor, give the limits of these ratios (0.045 / 0.022 CPU-s, 15 / (70 x 0.31))."""
    targets = [Target("CPU per request / direct reused turn CPU", ratio(cpu_s_per_request, direct_reused_cpu_s),
                      round(0.045 / FLOOR_REUSED_CPU_S, 2), "x")]
    for clients in sorted(throughput_rps):
        targets.append(Target(f"{clients} clients: req/s / direct reused clients' req/s",
                              ratio(throughput_rps[clients], direct_parallel_rps),
                              round(15 / FLOOR_PARALLEL_PER_COLD_QUERY, 2), "x", minimum=True))
    return targets
