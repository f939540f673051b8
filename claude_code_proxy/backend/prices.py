"""What an answer cost when the CLI could not say: learned from what the CLI said before.

The CLI prices every call itself and reports the running total in its result.  An answer
cut short at ``max_tokens`` gets no result: the CLI would call upstream again on its own
(a continuation), so it is killed at the answer's end (backend/run_state.py).  Its cost
is then estimated from its token counts and the model's price per token as the CLI's own
results have shown it: Claude's prices keep fixed ratios between input, output and cache
tokens (output 5x input, cache writes 1.25x, cache reads 0.1x), so one unit price per
model, the cost per input-token equivalent, is learned from every result and gives back
the CLI's own figure for any mix of tokens.  Until a model has been seen, no estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Weights of each kind of token in input-token equivalents (the API's price ratios).
_WEIGHTS = {"input": 1.0, "output": 5.0, "cache_read": 0.1, "cache_creation": 1.25}
_RESULT_FIELDS = {  # the CLI's per-model usage fields in a result's ``model_usage``
    "input": "inputTokens",
    "output": "outputTokens",
    "cache_read": "cacheReadInputTokens",
    "cache_creation": "cacheCreationInputTokens",
}
_USAGE_FIELDS = {  # the same in an answer's usage (normalized upstream usage)
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_input_tokens",
    "cache_creation": "cache_creation_input_tokens",
}


def _weighted(counts: Mapping[str, Any], fields: dict[str, str]) -> float:
    total = 0.0
    for kind, name in fields.items():
        value = counts.get(name)
        if isinstance(value, int | float) and value > 0:
            total += _WEIGHTS[kind] * value
    return total


class UnitPrices:
    """The cost of one input-token equivalent per model, from the CLI's results."""

    def __init__(self) -> None:
        self._per_unit: dict[str, float] = {}

    def learn(self, model_usage: Mapping[str, Any] | None) -> None:
        """Take a result's ``model_usage`` (per model: token counts and ``costUSD``)."""
        for model, usage in (model_usage or {}).items():
            if not isinstance(usage, Mapping):
                continue
            cost, units = usage.get("costUSD"), _weighted(usage, _RESULT_FIELDS)
            if isinstance(cost, int | float) and cost > 0 and units > 0:
                self._per_unit[str(model)] = cost / units

    def estimate(self, model: str | None, usage: Mapping[str, Any]) -> float | None:
        """The cost of an answer with ``usage`` on ``model``, or None if its price is unknown."""
        per_unit = self._per_unit.get(model or "")
        if per_unit is None:
            return None
        return per_unit * _weighted(usage, _USAGE_FIELDS)
