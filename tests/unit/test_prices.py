"""Pricing an answer the CLI could not price, from the CLI's own earlier results."""

from __future__ import annotations

import pytest

from claude_code_proxy.backend.prices import UnitPrices


def test_a_cut_answer_is_priced_like_the_cli_prices_the_model() -> None:
    prices = UnitPrices()
    assert prices.estimate("claude-sonnet-4-5", {"input_tokens": 10, "output_tokens": 10}) is None
    # $3 / $15 per million input / output tokens, cache reads $0.30, cache writes $3.75.
    prices.learn({"claude-sonnet-4-5": {"inputTokens": 1000, "outputTokens": 200, "cacheReadInputTokens": 5000,
                                        "cacheCreationInputTokens": 400, "costUSD": 0.003 + 0.003 + 0.0015 + 0.0015}})
    usage = {"input_tokens": 2000, "output_tokens": 100, "cache_read_input_tokens": 10000,
             "cache_creation_input_tokens": 0}
    assert prices.estimate("claude-sonnet-4-5", usage) == pytest.approx(0.006 + 0.0015 + 0.003)
    assert prices.estimate("claude-opus-4-5", usage) is None  # another model: not seen yet


def test_results_without_a_cost_teach_nothing() -> None:
    prices = UnitPrices()
    prices.learn({"m": {"inputTokens": 10, "outputTokens": 0, "costUSD": 0}, "n": "not a dict"})
    prices.learn(None)
    assert prices.estimate("m", {"input_tokens": 10}) is None
