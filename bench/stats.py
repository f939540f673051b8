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


@dataclass(frozen=True)
class Target:
    """One target of the issue: ``value`` must be at most ``limit``."""

    name: str
    value: float | None
    limit: float
    unit: str = ""

    @property
    def passed(self) -> bool:
        return self.value is not None and not math.isnan(self.value) and self.value <= self.limit

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "verdict": self.verdict}


def evaluate_targets(
    *,
    direct_cold_p50: float | None,
    direct_warm_p50: float | None,
    proxy_warm_p50: float | None,
    proxy_cold_ttft_p50: float | None,
    proxy_warm_ttft_p50: float | None,
    errors_16: int | None,
) -> list[Target]:
    """The four targets of issue 6, from the measured medians (seconds) and error count."""
    gap = difference(proxy_warm_p50, direct_warm_p50)
    return [
        Target("warm non-streaming p50 / direct cold query p50", ratio(proxy_warm_p50, direct_cold_p50), 0.25, "x"),
        Target("warm TTFT p50 / cold TTFT p50", ratio(proxy_warm_ttft_p50, proxy_cold_ttft_p50), 0.20, "x"),
        Target("proxy warm p50 - direct warm SDK turn p50", None if gap is None else gap * 1000, 15.0, "ms"),
        Target("16 concurrent clients: errors", None if errors_16 is None else float(errors_16), 0.0, ""),
    ]
