"""``python -m bench``: the side-by-side benchmark (see docs/performance.md).

Starts the fake upstream and three proxies (as real subprocesses on 127.0.0.1), measures,
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

from bench import direct as direct_sdk
from bench import report, scenarios
from bench.harness import FakeUpstreamProcess, ProxyProcess, cli_environment, tree_rss, wait_settled
from bench.stats import evaluate_targets, floor_relative, per_time, summarize

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=None, help="runs per latency scenario (default 15)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of each concurrency level's measured window, after its ramp (default 5)")
    parser.add_argument("--quick", action="store_true", help="a short run: 5 runs, 2 s per concurrency level")
    parser.add_argument("--concurrency", default="1,16,64",
                        help="client counts for the reusing proxy (default 1,16,64)")
    parser.add_argument("--single-use-concurrency", default="16",
                        help="client counts for the single-use proxy, for comparison (default 16; '' for none)")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="CLAUDE_PROXY_WARM_POOL_SIZE of the pooled proxies (default: the proxy's own default)")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="CLAUDE_PROXY_MAX_CONCURRENCY of every proxy (default: the proxy's own default)")
    parser.add_argument("--queue-size", type=int, default=None,
                        help="CLAUDE_PROXY_QUEUE_SIZE of every proxy (default: the largest client count, "
                        "so that every client can wait for a slot)")
    parser.add_argument("--no-miss", action="store_true", help="skip the pool-miss scenario")
    parser.add_argument("--settle-timeout", type=float, default=5.0,
                        help="seconds to wait for the proxy to settle (pool refilled) before each run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON result")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-run progress lines")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 5 if args.quick else 15
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.runs < 1 or args.duration <= 0:
        parser.error("--runs must be at least 1 and --duration positive")
    args.levels = _levels(args.concurrency)
    args.single_levels = _levels(args.single_use_concurrency)
    if args.queue_size is None:
        args.queue_size = max([16, *args.levels, *args.single_levels])
    return args


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def quiet(_: str) -> None:
    """A log function that logs nothing (discarded warm-up runs)."""


def latency_entry(sample: scenarios.Sample) -> dict[str, Any]:
    return {
        "wall": summarize(sample.wall),
        "ttft": summarize(sample.ttft),
        "errors": sample.errors,
        "error_samples": sample.error_texts,
        "tail_after_message_stop": summarize(sample.tail),
        "raw_wall_s": sample.wall,
        "raw_ttft_s": sample.ttft,
    }


def cpu_entry(sample: scenarios.Sample, method: str) -> dict[str, Any]:
    n = len(sample.wall) or 1
    return {
        "n": len(sample.wall),
        "method": method,
        "cpu_s_per_request": None if sample.cpu_s is None else sample.cpu_s / n,
        "proxy_own_cpu_ms_per_request": None if sample.own_cpu_s is None else sample.own_cpu_s * 1000 / n,
        "wall": summarize(sample.wall),
        "errors": sample.errors,
    }


def load_entry(load: scenarios.Load, proxy: str) -> dict[str, Any]:
    n = load.completed
    through_proxy = proxy.startswith("proxy")  # the direct floor has no proxy process to count
    return {
        "proxy": proxy,
        "clients": load.clients,
        "wall_s": load.duration,
        "completed": load.completed,
        "throughput_rps": n / load.duration if load.duration else None,
        "latency": summarize(load.latencies),
        "errors": load.errors,
        "error_samples": load.error_texts,
        "ramp_s": load.ramp_s,
        "ramp_counters": load.ramp_counters,
        "peak_cli_processes": load.peak_cli_processes if through_proxy else load.clients,
        "peak_rss_total": load.peak_rss_total,
        "peak_rss_proxy": load.peak_rss_proxy,
        "cpu_s_per_request": load.cpu_s / n if n else None,
        "proxy_own_cpu_ms_per_request": load.own_cpu_s * 1000 / n if n and through_proxy else None,
        "driver_cpu_ms_per_request": load.driver_cpu_s * 1000 / n if n and through_proxy else None,
        "counters": load.counters,
        "raw_latency_s": load.latencies,
    }


def paired_gap_ms(a: scenarios.Sample, b: scenarios.Sample) -> dict[str, Any]:
    """``a - b`` round by round (both ran in the same interleaved round), in ms."""
    if a.errors or b.errors or len(a.wall) != len(b.wall):
        return summarize([])
    return summarize([(x - y) * 1000 for x, y in zip(a.wall, b.wall, strict=True)])


def proxy_env(args: argparse.Namespace, *, reuse: bool) -> dict[str, str]:
    env = {"CLAUDE_PROXY_QUEUE_SIZE": str(args.queue_size), "CLAUDE_PROXY_CLI_REUSE": "true" if reuse else "false"}
    if args.max_concurrency is not None:
        env["CLAUDE_PROXY_MAX_CONCURRENCY"] = str(args.max_concurrency)
    return env


LATENCY_KEYS = ("direct_cold", "direct_reused", "proxy_cold", "proxy_cold_stream", "proxy_single",
                "proxy_single_stream", "proxy_warm", "proxy_warm_stream")


async def measure(args: argparse.Namespace, upstream_url: str, log: Any) -> dict[str, Any]:
    """Three proxies side by side (no pool; pool of single-use CLIs; pool of reused CLIs).
    The latency scenarios are interleaved run by run, so background load on the machine hits
    every scenario alike and the ratios stay fair."""
    latency: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    concurrency: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    direct = direct_sdk.DirectSDK()
    reused = direct_sdk.ReusedSDK(direct)
    meta["max_concurrency"] = args.max_concurrency or direct.settings.max_concurrency
    meta["queue_size"] = args.queue_size
    meta["pool_size"] = args.pool_size if args.pool_size is not None else direct.settings.pool_size
    cold = ProxyProcess(pool_size=0, label="cold", extra_env=proxy_env(args, reuse=False))
    single = ProxyProcess(pool_size=args.pool_size, label="single", extra_env=proxy_env(args, reuse=False))
    warm = ProxyProcess(pool_size=args.pool_size, label="warm", extra_env=proxy_env(args, reuse=True))
    proxies = {"proxy_cold": cold, "proxy_single": single, "proxy_warm": warm}
    try:
        for proxy in proxies.values():
            proxy.start()
        for proxy in proxies.values():
            assert proxy.ps is not None
            await asyncio.to_thread(wait_settled, proxy.ps, want_children=0, timeout=args.settle_timeout)
        assert cold.ps is not None and single.ps is not None and warm.ps is not None
        memory["idle_no_pool_proxy"], memory["idle_no_pool_total"], _ = tree_rss(cold.ps)
        memory["idle_proxy"], memory["idle_total"], memory["idle_children"] = tree_rss(warm.ps)

        # Discarded warm-up runs: first-use costs; on the pooled proxies they prime the pool.
        log("warm-up (discarded): direct SDK, the three proxies")
        await direct_sdk.run_direct(direct, 1, quiet)
        await direct_sdk.run_reused(reused, 1, args.settle_timeout, quiet)
        for proxy in proxies.values():
            assert proxy.ps is not None
            for stream in (False, True):
                await scenarios.run_proxy(proxy.url, proxy.ps, stream=stream, runs=1, want_children=0,
                                          settle_timeout=args.settle_timeout, vary_system=False, label="warm-up",
                                          log=quiet)
        want = {"proxy_cold": 0}
        for key in ("proxy_single", "proxy_warm"):
            ps = proxies[key].ps
            assert ps is not None
            want[key] = min(1, await asyncio.to_thread(scenarios.detect_pool, ps, max(args.settle_timeout, 8.0)))
            log(f"  {key}: {want[key]} ready CLI after priming" + ("" if want[key] else " (no pool: warm = cold)"))
        meta["pool_detected"] = want["proxy_warm"]
        memory["pool_full_proxy"], memory["pool_full_total"], memory["pool_full_children"] = tree_rss(warm.ps)

        samples = {key: scenarios.Sample() for key in LATENCY_KEYS}
        log(f"interleaved runs: {args.runs} of each scenario")
        for i in range(args.runs):
            tag = f" {i + 1}/{args.runs}"
            samples["direct_cold"].merge(await direct_sdk.run_direct(
                direct, 1, log, warmup=False, label="direct_cold" + tag))
            samples["direct_reused"].merge(await direct_sdk.run_reused(
                reused, 1, args.settle_timeout, log, label="direct_reused" + tag))
            for base, proxy in proxies.items():
                assert proxy.ps is not None
                for stream in (False, True):
                    key = base + ("_stream" if stream else "")
                    samples[key].merge(await scenarios.run_proxy(
                        proxy.url, proxy.ps, stream=stream, runs=1, want_children=want[base],
                        settle_timeout=args.settle_timeout, vary_system=False, label=key + tag, log=log))
        for key, sample in samples.items():
            latency[key] = latency_entry(sample)
        latency["direct_reused"]["rewind_after_result"] = summarize(reused.rewinds[1:])  # [0]: warm-up
        latency["proxy_warm"]["minus_direct_reused_paired_ms"] = paired_gap_ms(
            samples["proxy_warm"], samples["direct_reused"])
        method = "interleaved, one window per request (settled before and after)"
        for key, sample in samples.items():
            if not key.endswith("_stream") or key == "proxy_cold_stream":
                cpu[key] = cpu_entry(sample, method)
        cold.stop()
        await reused.close()

        if args.levels:
            load = await direct_sdk.run_direct_load(direct, clients=meta["pool_size"], duration=args.duration,
                                                   settle_timeout=args.settle_timeout, log=log)
            concurrency.append(load_entry(load, "direct_reused"))
        for key, levels in (("proxy_single", args.single_levels), ("proxy_warm", args.levels)):
            ps = proxies[key].ps
            assert ps is not None
            for clients in levels:
                load = await scenarios.run_load(proxies[key].url, ps, clients=clients, duration=args.duration,
                                                want_children=want[key], settle_timeout=args.settle_timeout, log=log)
                concurrency.append(load_entry(load, key))
            if key == "proxy_single":
                single.stop()
        if args.levels:
            meta["load_clients"] = max(args.levels)
            top = max((c for c in concurrency if c["proxy"] == "proxy_warm"), key=lambda c: c["clients"])
            memory["load_proxy"], memory["load_total"] = top["peak_rss_proxy"], top["peak_rss_total"]
            memory["load_children"] = top["peak_cli_processes"]
        await asyncio.to_thread(wait_settled, warm.ps, want_children=want["proxy_warm"], timeout=args.settle_timeout)
        memory["after_load_proxy"], memory["after_load_total"], memory["after_load_children"] = tree_rss(warm.ps)

        if not args.no_miss:
            # Last: misses add configurations to the pool and may evict the repeated one.
            miss = await scenarios.run_proxy(
                warm.url, warm.ps, stream=False, runs=args.runs, want_children=want["proxy_warm"],
                settle_timeout=args.settle_timeout, vary_system=True, label="proxy_miss", log=log)
            latency["proxy_miss"] = latency_entry(miss)
            cpu["proxy_miss"] = cpu_entry(miss, "sequential, one window over all requests")
    finally:
        await reused.close()
        for proxy in proxies.values():
            proxy.stop()
    return {"latency": latency, "cpu": cpu, "concurrency": concurrency, "memory": memory, "meta": meta}


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
    cold_p50 = lat["direct_cold"]["wall"]["p50"]
    loads = {c["clients"]: c for c in result["concurrency"] if c["proxy"] == "proxy_warm"}
    targets = evaluate_targets(
        direct_cold_p50=cold_p50,
        direct_reused_p50=lat["direct_reused"]["wall"]["p50"],
        proxy_warm_p50=lat["proxy_warm"]["wall"]["p50"],
        proxy_cold_ttft_p50=lat["proxy_cold_stream"]["ttft"]["p50"],
        proxy_warm_ttft_p50=lat["proxy_warm_stream"]["ttft"]["p50"],
        cpu_s_per_request=result["cpu"].get("proxy_warm", {}).get("cpu_s_per_request"),
        per_cold_query={n: per_time(c["completed"], c["wall_s"], cold_p50) for n, c in loads.items()},
        errors={n: c["errors"] for n, c in loads.items()},
    )
    result["targets"] = report.targets_json(targets)
    floor = next((c for c in result["concurrency"] if c["proxy"] == "direct_reused"), None)
    result["floor_relative"] = report.targets_json(floor_relative(
        cpu_s_per_request=result["cpu"].get("proxy_warm", {}).get("cpu_s_per_request"),
        direct_reused_cpu_s=result["cpu"].get("direct_reused", {}).get("cpu_s_per_request"),
        throughput_rps={n: c["throughput_rps"] for n, c in loads.items() if n in (16, 64)},
        direct_parallel_rps=None if floor is None else floor["throughput_rps"],
    ))
    result["meta"].update({
        "timestamp": stamp,
        "runs": args.runs,
        "duration_s_per_level": args.duration,
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
