"""``python -m bench``: the side-by-side benchmark of issue 6 (see docs/performance.md).

Starts the fake upstream and the proxy (as real subprocesses on 127.0.0.1), measures,
prints the tables and writes bench/results/<timestamp>.json.  Stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.harness import FakeUpstreamProcess, ProxyProcess, cli_environment, tree_rss, wait_settled
from bench.stats import evaluate_targets, summarize

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=None, help="sequential runs per latency scenario (default 15)")
    parser.add_argument("--rounds", type=int, default=None, help="bursts per concurrency level (default 3)")
    parser.add_argument("--quick", action="store_true", help="a short run: 5 runs, 1 round (about 1-2 minutes)")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="CLAUDE_PROXY_WARM_POOL_SIZE of the warm proxy (default: the proxy's own default)")
    parser.add_argument("--no-miss", action="store_true", help="skip the pool-miss scenario")
    parser.add_argument("--settle-timeout", type=float, default=5.0,
                        help="seconds to wait for the proxy to settle (pool refilled) before each run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON result")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-run progress lines")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 5 if args.quick else 15
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.runs < 1 or args.rounds < 1:
        parser.error("--runs and --rounds must be at least 1")
    args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    return args


def quiet(_: str) -> None:
    """A log function that logs nothing (discarded warm-up runs)."""


def latency_entry(sample: scenarios.Sample) -> dict[str, Any]:
    n = len(sample.wall) or 1
    return {
        "wall": summarize(sample.wall),
        "ttft": summarize(sample.ttft),
        "errors": sample.errors,
        "error_samples": sample.error_texts,
        "cpu_s_per_request": None if sample.cpu_s is None else sample.cpu_s / n,
        "proxy_own_cpu_ms_per_request": None if sample.own_cpu_s is None else sample.own_cpu_s * 1000 / n,
        "tail_after_message_stop": summarize(sample.tail),
        "raw_wall_s": sample.wall,
        "raw_ttft_s": sample.ttft,
    }


async def measure(args: argparse.Namespace, upstream_url: str, log: Any) -> dict[str, Any]:
    """Both proxies run side by side; the six core scenarios are interleaved run by run,
    so background load on the machine hits every scenario alike and the ratios stay fair."""
    latency: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    concurrency: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    direct = scenarios.DirectSDK()
    meta["max_concurrency"] = direct.settings.max_concurrency
    meta["default_pool_size"] = direct.settings.pool_size
    cold = ProxyProcess(pool_size=0, label="cold")
    warm = ProxyProcess(pool_size=args.pool_size, label="warm")
    try:
        cold.start()
        warm.start()
        assert cold.ps is not None and warm.ps is not None
        for proxy in (cold, warm):
            await asyncio.to_thread(wait_settled, proxy.ps, want_children=0, timeout=args.settle_timeout)
        memory["idle_no_pool_proxy"], memory["idle_no_pool_total"], _ = tree_rss(cold.ps)
        memory["idle_proxy"], memory["idle_total"], memory["idle_children"] = tree_rss(warm.ps)

        # Discarded warm-up runs: first-use costs; on the warm proxy they prime the pool.
        log("warm-up (discarded): direct SDK, both proxies")
        await scenarios.run_direct(direct, "cold", 1, args.settle_timeout, quiet)
        await scenarios.run_direct(direct, "warm", 1, args.settle_timeout, quiet)
        for proxy in (cold, warm):
            for stream in (False, True):
                await scenarios.run_proxy(proxy.url, proxy.ps, stream=stream, runs=1, want_children=0,
                                          settle_timeout=args.settle_timeout, vary_system=False, label="warm-up",
                                          log=quiet)
        pooled = await asyncio.to_thread(scenarios.detect_pool, warm.ps, max(args.settle_timeout, 8.0))
        meta["pool_detected"] = pooled
        log(f"  warm CLI processes after priming: {pooled}" + ("" if pooled else " (no warm pool: warm = cold)"))
        memory["pool_full_proxy"], memory["pool_full_total"], memory["pool_full_children"] = tree_rss(warm.ps)
        want = 1 if pooled else 0

        samples = {key: scenarios.Sample() for key in (
            "direct_cold", "direct_warm", "proxy_cold", "proxy_cold_stream", "proxy_warm", "proxy_warm_stream")}
        log(f"interleaved runs: {args.runs} of each scenario")
        for i in range(args.runs):
            tag = f" {i + 1}/{args.runs}"
            samples["direct_cold"].merge(await scenarios.run_direct(
                direct, "cold", 1, args.settle_timeout, log, warmup=False, label="direct_cold" + tag))
            samples["direct_warm"].merge(await scenarios.run_direct(
                direct, "warm", 1, args.settle_timeout, log, warmup=False, label="direct_warm" + tag))
            for proxy, base, children in ((cold, "proxy_cold", 0), (warm, "proxy_warm", want)):
                for stream in (False, True):
                    key = base + ("_stream" if stream else "")
                    samples[key].merge(await scenarios.run_proxy(
                        proxy.url, proxy.ps, stream=stream, runs=1, want_children=children,
                        settle_timeout=args.settle_timeout, vary_system=False, label=key + tag, log=log))
        for key, sample in samples.items():
            latency[key] = latency_entry(sample)
        latency["direct_warm"]["disconnect_after_result"] = summarize(direct.teardowns[1:])  # [0]: warm-up
        cold.stop()  # not needed any more: the rest measures the warm proxy alone

        if not args.no_miss:
            # Last among the latency runs: misses add keys to the pool and may evict the repeated one.
            latency["proxy_miss"] = latency_entry(await scenarios.run_proxy(
                warm.url, warm.ps, stream=False, runs=args.runs, want_children=want,
                settle_timeout=args.settle_timeout, vary_system=True, label="proxy_miss", log=log))
        for clients in args.levels:
            burst = await scenarios.run_burst(warm.url, warm.ps, clients=clients, rounds=args.rounds,
                                              want_children=want, settle_timeout=args.settle_timeout, log=log)
            wall = summarize(burst.walls)
            concurrency.append({
                "clients": clients,
                "rounds": args.rounds,
                "wall_p50_s": wall["p50"],
                "wall_s": burst.walls,
                "throughput_rps": clients / wall["p50"] if wall["p50"] else None,
                "errors": burst.errors,
                "error_samples": burst.error_texts,
                "peak_cli_processes": burst.peak_cli_processes,
                "peak_rss_total": burst.peak_rss_total,
                "peak_rss_proxy": burst.peak_rss_proxy,
                "cpu_s_per_request": burst.cpu_s / burst.requests if burst.requests else None,
            })
            if clients == max(args.levels):
                meta["load_clients"] = clients
                memory["load_proxy"] = burst.peak_rss_proxy
                memory["load_total"] = burst.peak_rss_total
                memory["load_children"] = burst.peak_cli_processes
    finally:
        cold.stop()
        warm.stop()
    return {"latency": latency, "concurrency": concurrency, "memory": memory, "meta": meta}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = (lambda _: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.monotonic()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    upstream = FakeUpstreamProcess()
    try:
        upstream.start()
        log(f"fake upstream on {upstream.url}")
        with cli_environment(upstream.url):
            result = asyncio.run(measure(args, upstream.url, log))
    finally:
        upstream.stop()

    lat = result["latency"]
    errors_16 = next((b["errors"] for b in result["concurrency"] if b["clients"] == 16), None)
    targets = evaluate_targets(
        direct_cold_p50=lat["direct_cold"]["wall"]["p50"],
        direct_warm_p50=lat["direct_warm"]["wall"]["p50"],
        proxy_warm_p50=lat["proxy_warm"]["wall"]["p50"],
        proxy_cold_ttft_p50=lat["proxy_cold_stream"]["ttft"]["p50"],
        proxy_warm_ttft_p50=lat["proxy_warm_stream"]["ttft"]["p50"],
        errors_16=errors_16,
    )
    result["targets"] = report.targets_json(targets)
    result["meta"].update({
        "timestamp": stamp,
        "runs": args.runs,
        "rounds": args.rounds,
        "quick": args.quick,
        "pool_size_arg": args.pool_size,
        "duration_s": round(time.monotonic() - started, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "model": scenarios.MODEL,
        "max_tokens": scenarios.MAX_TOKENS,
    })
    with contextlib.suppress(Exception):
        from claude_agent_sdk import __version__ as sdk_version

        result["meta"]["claude_agent_sdk"] = sdk_version
    print(report.render(result))
    path = report.write(result, args.out, stamp)
    print(f"\nwritten: {path}  ({result['meta']['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
