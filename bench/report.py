"""Tables for the terminal and the JSON written to bench/results/."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import Target, per_time, ratio

MIB = 1024 * 1024


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def mib(value: int | None) -> str:
    return "-" if not value else f"{value / MIB:.0f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain Markdown table (readable in a terminal, pasteable into docs)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


LATENCY_LABELS = (
    ("direct_cold", "direct cold query()"),
    ("direct_reused", "direct reused SDK turn"),
    ("proxy_cold", "proxy cold, non-streaming"),
    ("proxy_cold_stream", "proxy cold, streaming"),
    ("proxy_single", "proxy single-use pool, non-streaming"),
    ("proxy_single_stream", "proxy single-use pool, streaming"),
    ("proxy_warm", "proxy reused, non-streaming"),
    ("proxy_warm_stream", "proxy reused, streaming"),
    ("proxy_miss", "proxy pool miss, non-streaming"),
)
PROXY_LABELS = {"proxy_warm": "proxy, reused", "proxy_single": "proxy, single-use",
                "direct_reused": "direct reused SDK clients"}


def render(result: dict[str, Any]) -> str:
    lat = result["latency"]
    cold_p50 = lat.get("direct_cold", {}).get("wall", {}).get("p50")
    rows = []
    for key, label in LATENCY_LABELS:
        entry = lat.get(key)
        if entry is None:
            continue
        wall, ttft = entry["wall"], entry["ttft"]
        rows.append([label, str(wall["n"]), ms(wall["p50"]), ms(wall["p95"]), ms(ttft["p50"]), ms(ttft["p95"]),
                     num(ratio(wall["p50"], cold_p50), "{:.3f}"), str(entry["errors"])])
    out = ["Latency (ms, interleaved runs)", table(
        ["scenario", "n", "p50", "p95", "TTFT p50", "TTFT p95", "p50 / direct cold", "errors"], rows)]

    rows = []
    for key, label in LATENCY_LABELS:
        entry = result.get("cpu", {}).get(key)
        if entry is None:
            continue
        rows.append([label, str(entry["n"]), num(entry["cpu_s_per_request"], "{:.3f}"),
                     num(entry["proxy_own_cpu_ms_per_request"], "{:.1f}"), entry["method"]])
    out += ["", "CPU per request (proxy + its CLIs; direct: SDK driver + CLI)", table(
        ["scenario", "n", "CPU-s/req", "proxy py CPU-ms/req", "measured"], rows)]

    rows = [
        [PROXY_LABELS.get(c["proxy"], c["proxy"]), str(c["clients"]), num(c.get("ramp_s")), num(c["wall_s"]),
         str(c["completed"]),
         num(c["throughput_rps"], "{:.1f}"), num(per_time(c["completed"], c["wall_s"], cold_p50), "{:.1f}"),
         ms(c["latency"]["p50"]), ms(c["latency"]["p95"]), str(c["errors"]), str(c["peak_cli_processes"]),
         mib(c["peak_rss_total"]), num(c["cpu_s_per_request"], "{:.3f}"),
         num(c["proxy_own_cpu_ms_per_request"], "{:.1f}"), _cli_starts(c)]
        for c in result["concurrency"]
    ]
    out += ["", "Concurrency (closed loop: each client sends the same request back to back; counted over "
            "a window after the ramp)", table(
        ["who", "clients", "ramp s", "window s", "answers", "req/s", "per cold query", "p50 ms", "p95 ms", "errors",
         "peak CLIs", "peak RSS MiB", "CPU-s/req", "proxy py CPU-ms/req",
         "CLIs started ramp/window"], rows)]

    mem = result["memory"]
    rows = [
        ["proxy idle (pool disabled)", mib(mem.get("idle_no_pool_proxy")), mib(mem.get("idle_no_pool_total")), "0"],
        ["proxy idle (pool enabled, before any request)", mib(mem.get("idle_proxy")), mib(mem.get("idle_total")),
         str(mem.get("idle_children", 0))],
        ["pool primed (after one request, settled)", mib(mem.get("pool_full_proxy")), mib(mem.get("pool_full_total")),
         str(mem.get("pool_full_children", 0))],
        [f"under load ({result['meta'].get('load_clients', '-')} clients, peak)",
         mib(mem.get("load_proxy")), mib(mem.get("load_total")), str(mem.get("load_children", 0))],
        ["after load (settled)", mib(mem.get("after_load_proxy")), mib(mem.get("after_load_total")),
         str(mem.get("after_load_children", 0))],
    ]
    out += ["", "Memory of the reusing proxy (RSS MiB; total = proxy + its CLI processes)", table(
        ["state", "proxy", "total", "CLIs"], rows)]

    notes = []
    paired = lat.get("proxy_warm", {}).get("minus_direct_reused_paired_ms", {}).get("p50")
    if paired is not None:
        notes.append(f"proxy reused minus direct reused turn, paired round by round: {paired:+.1f} ms p50")
    rewind = lat.get("direct_reused", {}).get("rewind_after_result", {}).get("p50")
    if rewind is not None:
        notes.append(f"direct reused turn: the rewind after the ResultMessage takes {ms(rewind)} ms p50 "
                     "(not in its latency)")
    for key in ("proxy_cold_stream", "proxy_single_stream", "proxy_warm_stream"):
        tail = lat.get(key, {}).get("tail_after_message_stop", {}).get("p50")
        if tail is not None:
            notes.append(f"{key}: {ms(tail)} ms p50 from the message_stop frame to the end of the response")
    if notes:
        out += ["", *notes]
    rows = [[t["name"], _target_value(t), t["bound"], t["verdict"]] for t in result["targets"]]
    out += ["", "Targets", table(["target", "measured", "limit", "verdict"], rows)]
    rows = [[t["name"], _target_value(t), t["bound"], t["verdict"]] for t in result.get("floor_relative", [])]
    if rows:
        out += ["", "The same targets against the floor measured in this run (for a loaded machine)",
                table(["ratio", "measured", "limit", "verdict"], rows)]
    return "\n".join(out)


def _cli_starts(entry: dict[str, Any]) -> str:
    key = "claude_proxy_cli_spawned_total"
    ramp, window = entry.get("ramp_counters", {}).get(key), entry.get("counters", {}).get(key)
    return "-" if ramp is None or window is None else f"{ramp:.0f}/{window:.0f}"


def _target_value(target: dict[str, Any]) -> str:
    value = target["value"]
    if value is None:
        return "n/a"
    if target["unit"] == "x":
        return f"{value:.3f}x"
    if target["unit"] == "ms":
        return f"{value:+.1f} ms"
    if target["unit"] == " CPU-s":
        return f"{value:.3f} CPU-s"
    return f"{value:.3g}"


def targets_json(targets: Sequence[Target]) -> list[dict[str, Any]]:
    return [t.as_json() for t in targets]


def write(result: dict[str, Any], directory: Path, stamp: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
