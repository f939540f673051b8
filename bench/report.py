"""Tables for the terminal and the JSON written to bench/results/."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import Target

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


def render(result: dict[str, Any]) -> str:
    lat = result["latency"]
    rows = []
    for key, label in (
        ("direct_cold", "direct cold query()"),
        ("direct_warm", "direct warm SDK turn"),
        ("proxy_cold", "proxy cold, non-streaming"),
        ("proxy_cold_stream", "proxy cold, streaming"),
        ("proxy_warm", "proxy warm, non-streaming"),
        ("proxy_warm_stream", "proxy warm, streaming"),
        ("proxy_miss", "proxy pool miss, non-streaming"),
    ):
        entry = lat.get(key)
        if entry is None:
            continue
        wall, ttft = entry["wall"], entry["ttft"]
        rows.append([
            label, str(wall["n"]), ms(wall["p50"]), ms(wall["p95"]), ms(ttft["p50"]), ms(ttft["p95"]),
            num(entry.get("cpu_s_per_request"), "{:.3f}"), num(entry.get("proxy_own_cpu_ms_per_request"), "{:.1f}"),
            str(entry["errors"]),
        ])
    out = ["Latency (ms)", table(
        ["scenario", "n", "p50", "p95", "TTFT p50", "TTFT p95", "CPU-s/req", "proxy py CPU-ms/req", "errors"], rows)]

    rows = [
        [str(b["clients"]), str(b["rounds"]), num(b["wall_p50_s"]), num(b["throughput_rps"]), str(b["errors"]),
         str(b["peak_cli_processes"]), mib(b["peak_rss_total"]), num(b["cpu_s_per_request"], "{:.3f}")]
        for b in result["concurrency"]
    ]
    out += ["", "Concurrency (proxy with the warm pool, non-streaming, same configuration)", table(
        ["clients", "rounds", "wall p50 s", "req/s", "errors", "peak CLIs", "peak RSS MiB", "CPU-s/req"], rows)]

    mem = result["memory"]
    rows = [
        ["proxy idle (pool disabled)", mib(mem.get("idle_no_pool_proxy")), mib(mem.get("idle_no_pool_total")), "0"],
        ["proxy idle (pool enabled, before any request)", mib(mem.get("idle_proxy")), mib(mem.get("idle_total")),
         str(mem.get("idle_children", 0))],
        ["pool full (after one request, settled)", mib(mem.get("pool_full_proxy")), mib(mem.get("pool_full_total")),
         str(mem.get("pool_full_children", 0))],
        [f"under load ({result['meta'].get('load_clients', '-')} concurrent, peak)",
         mib(mem.get("load_proxy")), mib(mem.get("load_total")),
         str(mem.get("load_children", 0))],
    ]
    out += ["", "Memory (RSS MiB; total = proxy + its CLI processes)", table(
        ["state", "proxy", "total", "CLIs"], rows)]

    notes = []
    teardown = lat.get("direct_warm", {}).get("disconnect_after_result", {}).get("p50")
    if teardown is not None:
        notes.append(f"direct warm turn: disconnect() after the ResultMessage takes {ms(teardown)} ms p50 "
                     "(not in its latency)")
    for key in ("proxy_cold_stream", "proxy_warm_stream"):
        tail = lat.get(key, {}).get("tail_after_message_stop", {}).get("p50")
        if tail is not None:
            notes.append(f"{key}: {ms(tail)} ms p50 from the message_stop frame to the end of the response")
    if notes:
        out += ["", *notes]
    rows = [[t["name"], _target_value(t), f"<= {t['limit']:g}{t['unit']}", t["verdict"]]
            for t in result["targets"]]
    out += ["", "Targets", table(["target", "measured", "limit", "verdict"], rows)]
    return "\n".join(out)


def _target_value(target: dict[str, Any]) -> str:
    value = target["value"]
    if value is None:
        return "n/a"
    if target["unit"] == "x":
        return f"{value:.3f}x"
    if target["unit"] == "ms":
        return f"{value:+.1f} ms"
    return f"{value:g}"


def targets_json(targets: Sequence[Target]) -> list[dict[str, Any]]:
    return [t.as_json() for t in targets]


def write(result: dict[str, Any], directory: Path, stamp: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
