"""``python -m bench.profile``: where the proxy's own time goes per streamed event.

Starts the fake upstream and the proxy (subprocesses, loopback), then streams long
answers (``[[long:N]]``, max_tokens 4000) on both surfaces:

1. unprofiled: proxy Python CPU (its own process, not the CLI) per forwarded event;
2. under ``py-spy record`` (sampling, attached to the proxy's pid): the share of samples
   in each function, turned into microseconds per event with the unprofiled CPU.

Prints the top functions (inclusive and self) and writes the raw py-spy stacks and a
JSON summary to bench/results/.  py-spy must be installed in the venv (not a project
dependency): ``.venv/bin/pip install py-spy``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.harness import FakeUpstreamProcess, ProxyProcess, cli_environment, own_cpu, wait_settled
from bench.report import table

RESULTS = Path(__file__).resolve().parent / "results"
PROXY_PKG = "claude_code_proxy/"
# "function (file:line)" as py-spy writes frames in raw (collapsed) output.
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def stream_body(surface: str, tokens: int) -> tuple[str, dict[str, Any]]:
    prompt = f"[[long:{tokens}]]"
    if surface == "openai":
        return "/openai/v1/chat/completions", {
            "model": "claude-haiku-4-5", "max_tokens": 4000, "stream": True,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": prompt}],
        }
    return "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 4000, "stream": True,
                            "messages": [{"role": "user", "content": prompt}]}


async def stream_once(client: httpx.AsyncClient, url: str, surface: str, tokens: int) -> tuple[float, int]:
    """(seconds, SSE data frames received) for one long streaming answer."""
    path, body = stream_body(surface, tokens)
    data = bytearray()
    start = time.perf_counter()
    async with client.stream("POST", url + path, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        async for chunk in response.aiter_raw():
            data += chunk
    wall = time.perf_counter() - start
    frames = data.count(b"data:")
    if frames < tokens:
        raise RuntimeError(f"only {frames} frames for {tokens} tokens: {bytes(data[-300:])!r}")
    return wall, frames


async def stream_many(url: str, surface: str, count: int, tokens: int) -> tuple[list[float], int]:
    walls, frames = [], 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        for _ in range(count):
            wall, n = await stream_once(client, url, surface, tokens)
            walls.append(wall)
            frames += n
    return walls, frames


def parse_raw(text: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy raw output -> (inclusive samples per frame, self samples per frame, total samples)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_key(f) for f in stack.split(";") if f]
        frames = [f for f in frames if f]
        for key in set(frames):
            inclusive[key] += count
        if frames:
            own[frames[-1]] += count
    return inclusive, own, total


def _frame_key(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    if PROXY_PKG in path:
        path = PROXY_PKG + path.split(PROXY_PKG, 1)[1]
    return f"{match.group('func')} ({path})"


def group_of(key: str) -> str:
    """Coarse owner of a frame: the proxy's module, or the library."""
    path = key[key.rfind("(") + 1:-1]
    if path.startswith(PROXY_PKG):
        return path
    return path.split("/", 1)[0] if "/" in path else path


def run_pyspy(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy (not a project dependency)")
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--function", "--gil",
         "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def stop_pyspy(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per answer ([[long:N]]; default 2000)")
    parser.add_argument("--streams", type=int, default=4, help="answers per surface and phase (default 4)")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second (default 1000)")
    parser.add_argument("--top", type=int, default=25, help="functions listed (default 25)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    raw_path = args.out / f"profile-{stamp}.txt"
    summary: dict[str, Any] = {"tokens": args.tokens, "streams": args.streams, "rate": args.rate, "surfaces": {}}

    upstream = FakeUpstreamProcess()
    try:
        upstream.start()
        with cli_environment(upstream.url):
            proxy = ProxyProcess(pool_size=None, label="profile")
            try:
                proxy.start()
                assert proxy.ps is not None
                asyncio.run(stream_many(proxy.url, "anthropic", 1, 50))  # warm-up
                for surface in ("anthropic", "openai"):
                    wait_settled(proxy.ps, want_children=0, timeout=5)
                    before = own_cpu(proxy.ps)
                    walls, frames = asyncio.run(stream_many(proxy.url, surface, args.streams, args.tokens))
                    cpu = own_cpu(proxy.ps) - before
                    summary["surfaces"][surface] = {
                        "frames": frames, "proxy_cpu_s": cpu, "us_per_event": cpu * 1e6 / frames,
                        "wall_s_per_answer": sum(walls) / len(walls),
                    }
                    print(f"{surface}: {frames} frames, proxy Python CPU {cpu:.3f} s "
                          f"= {cpu * 1e6 / frames:.1f} us/event, {sum(walls) / len(walls):.2f} s per answer",
                          flush=True)
                wait_settled(proxy.ps, want_children=0, timeout=5)
                spy = run_pyspy(proxy.ps.pid, raw_path, args.rate)
                try:
                    time.sleep(1.0)  # py-spy attaches
                    frames = 0
                    for surface in ("anthropic", "openai"):
                        frames += asyncio.run(stream_many(proxy.url, surface, args.streams, args.tokens))[1]
                finally:
                    err = stop_pyspy(spy)
            finally:
                proxy.stop()
    finally:
        upstream.stop()

    if not raw_path.exists():
        print(f"py-spy wrote nothing:\n{err}", file=sys.stderr)
        return 1
    inclusive, own, total = parse_raw(raw_path.read_text())
    us_per_event = (summary["surfaces"]["anthropic"]["us_per_event"]
                    + summary["surfaces"]["openai"]["us_per_event"]) / 2
    print(f"\npy-spy: {total} samples over {frames} frames; average proxy CPU {us_per_event:.1f} us/event\n")

    def rows(counter: Counter[str]) -> list[list[str]]:
        return [[key, f"{100 * n / total:.1f}%", f"{us_per_event * n / total:.1f}"]
                for key, n in counter.most_common(args.top)]

    print("Inclusive (function and what it calls)")
    print(table(["function (file)", "samples", "us/event"], rows(inclusive)))
    print("\nSelf (the function's own code)")
    print(table(["function (file)", "samples", "us/event"], rows(own)))
    groups: Counter[str] = Counter()
    for key, n in own.items():
        groups[group_of(key)] += n
    print("\nSelf time by module / library")
    print(table(["module", "samples", "us/event"], rows(groups)))
    proxy_inclusive = Counter({k: v for k, v in inclusive.items() if k.split("(")[-1].startswith(PROXY_PKG)})
    print("\nThe proxy's own functions (inclusive)")
    print(table(["function (file)", "samples", "us/event"], rows(proxy_inclusive)))
    summary.update({
        "samples": total, "frames_profiled": frames, "us_per_event": us_per_event,
        "inclusive": dict(inclusive.most_common(80)), "self": dict(own.most_common(80)),
        "groups": dict(groups.most_common()), "raw": str(raw_path),
    })
    path = args.out / f"profile-{stamp}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {path} and {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
