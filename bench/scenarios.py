"""The proxy measurements: one request, sequential runs, a closed loop of clients.

Latency ("wall") is from sending the request to having the whole answer: for the proxy
the full HTTP response, for ``query()`` the ``ResultMessage``.  TTFT is until the first
``content_block_delta`` (an SSE frame from the proxy, a ``StreamEvent`` from the SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from bench.harness import RssSampler, cli_children, own_cpu, tree_cpu, wait_settled

MODEL = "claude-haiku-4-5"
MAX_TOKENS = 256
SYSTEM = "You are the benchmark's assistant. Answer briefly."
PROMPT = "Say hello."
TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def messages_body(*, system: str = SYSTEM, stream: bool = False, prompt: str = PROMPT,
                  max_tokens: int = MAX_TOKENS, model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "system": system, "stream": stream,
            "messages": [{"role": "user", "content": prompt}]}


@dataclass
class Sample:
    wall: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    errors: int = 0
    error_texts: list[str] = field(default_factory=list)
    cpu_s: float | None = None
    """CPU-seconds of the measured process tree over the runs."""
    own_cpu_s: float | None = None
    """CPU-seconds of the proxy's own Python process (no CLIs) over the runs."""
    tail: list[float] = field(default_factory=list)
    """Streams: seconds from the message_stop frame to the end of the response."""

    def merge(self, other: Sample) -> None:
        """Add another run's results (the interleaved loop measures one request at a time)."""
        self.wall += other.wall
        self.ttft += other.ttft
        self.tail += other.tail
        self.errors += other.errors
        self.error_texts = (self.error_texts + other.error_texts)[:5]
        for name in ("cpu_s", "own_cpu_s"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, (mine or 0.0) + theirs)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_texts) < 5:
            self.error_texts.append(text[:300])


def nth(i: int, runs: int) -> str:
    return f" {i + 1}/{runs}" if runs > 1 else ""


# -- proxy ---------------------------------------------------------------------------
async def proxy_once(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                     tails: list[float] | None = None) -> tuple[float, float | None]:
    """One request: (seconds to the whole answer, seconds to the first delta or None).

    For a stream, ``tails`` gets the seconds from the ``message_stop`` frame to the end of
    the response (what the proxy does after the last token: CLI teardown, metrics...).
    """
    start = time.perf_counter()
    if not body.get("stream"):
        response = await client.post(f"{url}/v1/messages", json=body)
        wall = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        data = response.json()
        if not data.get("content"):
            raise RuntimeError(f"empty answer: {response.text[:200]}")
        return wall, None
    ttft = stopped = None
    tail = b""
    async with client.stream("POST", f"{url}/v1/messages", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        async for chunk in response.aiter_raw():
            window = tail[-32:] + chunk
            if ttft is None and b"content_block_delta" in window:
                ttft = time.perf_counter() - start
            if stopped is None and b"message_stop" in window:
                stopped = time.perf_counter()
            tail = (tail + chunk)[-4096:]
    wall = time.perf_counter() - start
    if tails is not None and stopped is not None:
        tails.append(time.perf_counter() - stopped)
    if b"event: error" in tail or b"message_stop" not in tail:
        raise RuntimeError(f"stream did not complete: {tail[-300:]!r}")
    return wall, ttft


async def run_proxy(url: str, ps: psutil.Process, *, stream: bool, runs: int, want_children: int,
                    settle_timeout: float, vary_system: bool, label: str, log: Any) -> Sample:
    """``runs`` sequential requests, each after the proxy's tree is settled (pool refilled)."""
    sample = Sample()
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        cpu_before, own_before = tree_cpu(ps), own_cpu(ps)
        for i in range(runs):
            await asyncio.to_thread(wait_settled, ps, want_children=want_children, timeout=settle_timeout)
            system = f"{SYSTEM} Variant {uuid.uuid4().hex}." if vary_system else SYSTEM
            try:
                wall, ttft = await proxy_once(client, url, messages_body(system=system, stream=stream), sample.tail)
            except Exception as exc:
                sample.error(f"{type(exc).__name__}: {exc}")
                continue
            sample.wall.append(wall)
            if ttft is not None:
                sample.ttft.append(ttft)
            log(f"  {label}{nth(i, runs)}: {wall * 1000:.0f} ms" + (f", TTFT {ttft * 1000:.0f} ms" if ttft else ""))
        # Settle first, so the CPU of the replacement the pool starts afterwards counts here.
        await asyncio.to_thread(wait_settled, ps, want_children=want_children, timeout=settle_timeout)
        sample.cpu_s = tree_cpu(ps) - cpu_before
        sample.own_cpu_s = own_cpu(ps) - own_before
    return sample


@dataclass
class Load:
    clients: int
    duration: float
    """Seconds of the measured window."""
    completed: int = 0
    """Answers that arrived within the measured window."""
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    """Failed requests, ramp included."""
    error_texts: list[str] = field(default_factory=list)
    ramp_s: float = 0.0
    """Seconds until every client had its first answer (the window starts then)."""
    ramp_counters: dict[str, float] = field(default_factory=dict)
    peak_rss_total: int = 0
    peak_rss_proxy: int = 0
    peak_cli_processes: int = 0
    cpu_s: float = 0.0
    own_cpu_s: float = 0.0
    driver_cpu_s: float = 0.0
    """CPU-seconds of the benchmark process itself (the HTTP clients) over the window."""
    counters: dict[str, float] = field(default_factory=dict)
    """Changes of the proxy's /metrics counters over the window (CLIs started, pool hits...)."""

    def fail(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_texts) < 5:
            self.error_texts.append(f"{type(exc).__name__}: {exc}"[:300])


class Window:
    """Answers counted between ``open()`` and ``close()``; everything before is the ramp."""

    def __init__(self, clients: int) -> None:
        self.started = 0.0
        self.ended = 0.0
        self.latencies: list[float] = []
        self.first_answers: set[int] = set()
        self.all_answered = asyncio.Event()
        self.clients = clients
        self.stop = False

    def answered(self, client: int, sent: float, now: float) -> None:
        if self.started and not self.ended and now >= self.started:
            self.latencies.append(now - sent)
        self.first_answers.add(client)
        if len(self.first_answers) == self.clients:
            self.all_answered.set()


async def run_load(url: str, ps: psutil.Process, *, clients: int, duration: float, want_children: int,
                   settle_timeout: float, log: Any, ramp_timeout: float = 120.0) -> Load:
    """``clients`` clients, each sending the same non-streaming request back to back: a
    closed loop.  The ramp (until every client has had one answer: the pool grows to the
    load here) is reported apart; the window of ``duration`` seconds after it measures the
    steady rate: answers that arrive in it, and CPU over it."""
    load = Load(clients, duration)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    me = psutil.Process()
    body = messages_body()
    window = Window(clients)
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
        await asyncio.to_thread(wait_settled, ps, want_children=want_children, timeout=settle_timeout)
        ramp_before = await scrape_counters(client, url)

        async def one_client(index: int) -> None:
            while not window.stop:
                sent = time.perf_counter()
                try:
                    await proxy_once(client, url, body)
                except Exception as exc:
                    load.fail(exc)
                    await asyncio.sleep(0.05)  # a refused request is not retried in a tight loop
                    continue
                window.answered(index, sent, time.perf_counter())

        with RssSampler(ps, interval=0.2) as sampler:
            start = time.perf_counter()
            tasks = [asyncio.create_task(one_client(i)) for i in range(clients)]
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(window.all_answered.wait(), ramp_timeout)
                load.ramp_s = time.perf_counter() - start
                before = await scrape_counters(client, url)
                cpu_before, own_before, driver_before = tree_cpu(ps), own_cpu(ps), own_cpu(me)
                window.started = time.perf_counter()
                await asyncio.sleep(duration)
                window.ended = time.perf_counter()
                load.driver_cpu_s = own_cpu(me) - driver_before
                load.cpu_s = tree_cpu(ps) - cpu_before
                load.own_cpu_s = own_cpu(ps) - own_before
                load.duration = window.ended - window.started
            finally:
                window.stop = True
                await asyncio.gather(*tasks, return_exceptions=True)
        after = await scrape_counters(client, url)
    load.latencies = window.latencies
    load.completed = len(window.latencies)
    load.ramp_counters = {key: before.get(key, 0.0) - ramp_before.get(key, 0.0) for key in before}
    load.counters = {key: after[key] - before.get(key, 0.0) for key in after}
    load.peak_rss_total = sampler.peak_total
    load.peak_rss_proxy = sampler.peak_own
    load.peak_cli_processes = sampler.peak_children
    log(f"  {clients} clients: ramp {load.ramp_s:.2f} s, then {load.completed} answers in {load.duration:.2f} s, "
        f"{load.errors} errors, peak {load.peak_cli_processes} CLIs")
    return load


COUNTERS = ("claude_proxy_cli_spawned_total", "claude_proxy_warm_pool_hits_total",
            "claude_proxy_warm_pool_misses_total")


async def scrape_counters(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The proxy's CLI counters from /metrics, summed over labels ({} if unavailable)."""
    try:
        response = await client.get(f"{url}/metrics")
    except httpx.HTTPError:
        return {}
    totals: dict[str, float] = {}
    for line in response.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in COUNTERS:
            with contextlib.suppress(ValueError):
                totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def detect_pool(ps: psutil.Process, timeout: float) -> int:
    """How many pre-started CLIs the proxy keeps after a request (0: no warm pool)."""
    wait_settled(ps, want_children=1, timeout=timeout)
    return len(cli_children(ps))
