"""The benchmark package imports, and its statistics helpers are right (never runs the benchmark)."""

from __future__ import annotations

import math

import pytest

from bench import __main__ as bench_main
from bench import profile, report, scenarios
from bench.stats import Target, difference, evaluate_targets, percentile, ratio, summarize


def test_percentile_interpolates_like_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize() -> None:
    summary = summarize([0.1, 0.2, 0.3, 0.4])
    assert summary["n"] == 4
    assert summary["p50"] == pytest.approx(0.25)
    assert summary["mean"] == pytest.approx(0.25)
    assert (summary["min"], summary["max"]) == (0.1, 0.4)
    assert summarize([])["p50"] is None


def test_ratio_and_difference_handle_missing_values() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0.0) is None
    assert difference(0.120, 0.100) == pytest.approx(0.020)
    assert difference(None, 0.1) is None


def test_target_verdicts() -> None:
    assert Target("t", 0.25, 0.25).verdict == "PASS"
    assert Target("t", 0.26, 0.25).verdict == "MISS"
    assert Target("t", None, 0.25).verdict == "MISS"
    assert Target("t", math.nan, 0.25).verdict == "MISS"
    assert Target("t", 0.0, 0.0).as_json()["passed"] is True


def test_evaluate_targets() -> None:
    targets = evaluate_targets(
        direct_cold_p50=0.400, direct_warm_p50=0.080, proxy_warm_p50=0.090,
        proxy_cold_ttft_p50=0.350, proxy_warm_ttft_p50=0.080, errors_16=0,
    )
    by_unit = [(t.value, t.verdict) for t in targets]
    assert by_unit[0][0] == pytest.approx(0.225) and by_unit[0][1] == "PASS"
    assert by_unit[1][0] == pytest.approx(0.080 / 0.350) and by_unit[1][1] == "MISS"
    assert by_unit[2][0] == pytest.approx(10.0) and by_unit[2][1] == "PASS"  # milliseconds
    assert by_unit[3] == (0.0, "PASS")
    missing = evaluate_targets(direct_cold_p50=None, direct_warm_p50=0.08, proxy_warm_p50=None,
                               proxy_cold_ttft_p50=0.3, proxy_warm_ttft_p50=None, errors_16=None)
    assert [t.verdict for t in missing] == ["MISS"] * 4


def test_cli_defaults_and_table() -> None:
    args = bench_main.parse_args([])
    assert (args.runs, args.rounds, args.levels) == (15, 3, [1, 4, 16])
    quick = bench_main.parse_args(["--quick"])
    assert (quick.runs, quick.rounds) == (5, 1)
    assert bench_main.parse_args(["--quick", "--runs", "7"]).runs == 7
    text = report.table(["a", "bb"], [["1", "2"], ["333", "4"]])
    assert text.splitlines()[0] == "| a   | bb |"
    assert scenarios.messages_body(stream=True)["stream"] is True


def test_profile_parses_pyspy_raw_output() -> None:
    raw = (
        "main (/x/claude_code_proxy/cli.py:10);feed (/x/claude_code_proxy/services/streaming.py:5) 3\n"
        "main (/x/claude_code_proxy/cli.py:10);dumps (/usr/lib/python3.11/json/__init__.py:1) 1\n"
    )
    inclusive, own, total = profile.parse_raw(raw)
    assert total == 4
    assert inclusive["main (claude_code_proxy/cli.py)"] == 4
    assert own["feed (claude_code_proxy/services/streaming.py)"] == 3
    module = "claude_code_proxy/services/streaming.py"
    assert profile.group_of(f"feed ({module})") == module
