"""The benchmark package imports, and its statistics helpers are right (never runs the benchmark)."""

from __future__ import annotations

import math

import pytest

from bench import __main__ as bench_main
from bench import profile, report, scenarios
from bench.stats import (
    Target,
    difference,
    evaluate_targets,
    floor_relative,
    per_time,
    percentile,
    ratio,
    summarize,
)


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


def test_per_time() -> None:
    # 40 answers in 2 s, counted per 0.3 s (a direct cold query's time): 6 per cold query.
    assert per_time(40, 2.0, 0.3) == pytest.approx(6.0)
    assert per_time(None, 2.0, 0.3) is None
    assert per_time(40, 0.0, 0.3) is None
    assert per_time(40, 2.0, None) is None


def test_target_verdicts() -> None:
    assert Target("t", 0.25, 0.25).verdict == "PASS"
    assert Target("t", 0.26, 0.25).verdict == "MISS"
    assert Target("t", None, 0.25).verdict == "MISS"
    assert Target("t", math.nan, 0.25).verdict == "MISS"
    assert Target("t", 0.0, 0.0).as_json()["passed"] is True
    at_least = Target("t", 15.0, 15.0, minimum=True)
    assert at_least.verdict == "PASS" and at_least.bound == ">= 15"
    assert Target("t", 14.9, 15.0, minimum=True).verdict == "MISS"
    assert Target("t", None, 15.0, minimum=True).verdict == "MISS"
    assert Target("t", 0.2, 0.25, "x").as_json()["bound"] == "<= 0.25x"


def test_evaluate_targets() -> None:
    targets = evaluate_targets(
        direct_cold_p50=0.400, direct_reused_p50=0.020, proxy_warm_p50=0.030,
        proxy_cold_ttft_p50=0.350, proxy_warm_ttft_p50=0.030, cpu_s_per_request=0.05,
        per_cold_query={16: 15.0, 64: 12.0}, errors={16: 0, 64: 3},
    )
    got = {t.name: (t.value, t.verdict) for t in targets}
    assert len(got) == len(targets) == 8
    assert got["warm non-streaming p50 / direct cold query p50"] == (pytest.approx(0.075), "PASS")
    assert got["warm TTFT p50 / cold TTFT p50"] == (pytest.approx(0.030 / 0.350), "MISS")
    assert got["proxy warm p50 - direct reused SDK turn p50"] == (pytest.approx(10.0), "MISS")  # milliseconds
    assert got["CPU per request, proxy + CLIs (sequential)"] == (0.05, "MISS")
    assert got["16 clients: requests per direct cold query time"] == (15.0, "PASS")
    assert got["64 clients: requests per direct cold query time"] == (12.0, "MISS")
    assert got["16 clients: errors"] == (0.0, "PASS")
    assert got["64 clients: errors"] == (3.0, "MISS")
    missing = evaluate_targets(direct_cold_p50=None, direct_reused_p50=0.02, proxy_warm_p50=None,
                               proxy_cold_ttft_p50=0.3, proxy_warm_ttft_p50=None, cpu_s_per_request=None,
                               per_cold_query={}, errors={})
    assert [t.verdict for t in missing] == ["MISS"] * 8


def test_cli_defaults_and_table() -> None:
    args = bench_main.parse_args([])
    assert (args.runs, args.duration, args.levels, args.single_levels) == (15, 5.0, [1, 16, 64], [16])
    assert args.queue_size == 64  # every client of the largest level can wait for a slot
    quick = bench_main.parse_args(["--quick"])
    assert (quick.runs, quick.duration) == (5, 2.0)
    assert bench_main.parse_args(["--quick", "--runs", "7"]).runs == 7
    assert bench_main.parse_args(["--single-use-concurrency", ""]).single_levels == []
    text = report.table(["a", "bb"], [["1", "2"], ["333", "4"]])
    assert text.splitlines()[0] == "| a   | bb |"
    assert scenarios.messages_body(stream=True)["stream"] is True


def test_floor_relative_targets() -> None:
    targets = floor_relative(cpu_s_per_request=0.066, direct_reused_cpu_s=0.062,
                             throughput_rps={16: 2.0, 64: 3.5}, direct_parallel_rps=3.0)
    assert [(t.name, t.limit, t.minimum) for t in targets] == [
        ("CPU per request / direct reused turn CPU", 2.05, False),
        ("16 clients: req/s / direct reused clients' req/s", 0.69, True),
        ("64 clients: req/s / direct reused clients' req/s", 0.69, True),
    ]
    assert [t.verdict for t in targets] == ["PASS", "MISS", "PASS"]
    assert targets[1].value == pytest.approx(2.0 / 3.0)


def test_report_renders_every_section() -> None:
    sample = scenarios.Sample(wall=[0.30, 0.32], ttft=[0.28, 0.29], cpu_s=0.8, own_cpu_s=0.02)
    warm = scenarios.Sample(wall=[0.03, 0.02], ttft=[0.02, 0.02], cpu_s=0.06, own_cpu_s=0.01)
    latency = {key: bench_main.latency_entry(warm if "warm" in key or "reused" in key else sample)
               for key in bench_main.LATENCY_KEYS}
    cpu = {key: bench_main.cpu_entry(warm, "interleaved") for key in ("direct_reused", "proxy_warm")}
    load = scenarios.Load(16, 2.0, completed=40, latencies=[0.5] * 40, ramp_s=1.0,
                          ramp_counters={"claude_proxy_cli_spawned_total": 2.0},
                          counters={"claude_proxy_cli_spawned_total": 0.0})
    targets = evaluate_targets(direct_cold_p50=0.31, direct_reused_p50=0.025, proxy_warm_p50=0.025,
                               proxy_cold_ttft_p50=0.285, proxy_warm_ttft_p50=0.02, cpu_s_per_request=0.03,
                               per_cold_query={16: per_time(40, 2.0, 0.31)}, errors={16: 0})
    result = {"latency": latency, "cpu": cpu, "concurrency": [bench_main.load_entry(load, "proxy_warm")],
              "memory": {"idle_proxy": 80 * report.MIB}, "meta": {"load_clients": 16},
              "targets": report.targets_json(targets)}
    text = report.render(result)
    for heading in ("Latency (ms", "CPU per request", "Concurrency", "Memory", "Targets"):
        assert heading in text
    assert "| proxy, reused | 16      | 1.00   | 2.00" in text  # ramp, then the measured window
    assert "2/0" in text  # CLIs started in the ramp / in the window
    assert "6.2" in text  # 40 answers in 2 s, per 0.31 s cold query


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
