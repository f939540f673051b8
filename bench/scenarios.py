"""The measurements: direct SDK runs, proxy requests, concurrent bursts.

Latency ("wall") is from sending the request to having the whole answer: for the proxy
the full HTTP response, for ``query()`` the ``ResultMessage``.  TTFT is until the first
``content_block_delta`` (an SSE frame from the proxy, a ``StreamEvent`` from the SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
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


# -- direct SDK ----------------------------------------------------------------------
class DirectSDK:
    """The SDK driven directly, with exactly the options the proxy builds for the same request."""

    def __init__(self) -> None:
        from claude_code_proxy.backend.options import build_options
        from claude_code_proxy.catalog import ModelCatalog
        from claude_code_proxy.config.settings import Settings
        from claude_code_proxy.surfaces.anthropic.models import MessagesRequest
        from claude_code_proxy.surfaces.anthropic.translate import from_anthropic

        self.settings = Settings(_env_file=None, cli_max_retries=0, usage_db="")  # type: ignore[call-arg]
        self._build_options = build_options
        self.cli_path = self.settings.resolved_cli_path()
        catalog = ModelCatalog(self.settings.models, self.settings.model_aliases, self.settings.default_model)
        body = MessagesRequest.model_validate(messages_body())
        self.chat = from_anthropic(body, catalog.resolve(body.model))
        self.teardowns: list[float] = []
        """Seconds ``disconnect()`` took after each warm turn (not part of its latency)."""

    def _workdir(self) -> Path:
        workdir = Path(tempfile.mkdtemp(prefix="bench-direct-"))
        (workdir / "cwd").mkdir(mode=0o700)
        (workdir / "tmp").mkdir(mode=0o700)
        return workdir

    def options(self, workdir: Path) -> Any:
        return self._build_options(self.settings, self.cli_path, self.chat, workdir)

    async def cold(self) -> tuple[float, float | None]:
        """One cold ``query()``: (seconds to the ResultMessage, seconds to the first delta)."""
        import claude_agent_sdk as sdk

        workdir = self._workdir()
        try:
            options = self.options(workdir)
            start = time.perf_counter()
            return await _timed(sdk.query(prompt=PROMPT, options=options), start, "query()")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def warm(self, settle_timeout: float) -> tuple[float, float | None]:
        """One turn on a ClaudeSDKClient connected (and settled) before the clock starts."""
        import claude_agent_sdk as sdk

        workdir = self._workdir()
        client = sdk.ClaudeSDKClient(self.options(workdir))
        try:
            await client.connect()
            process = getattr(getattr(client, "_transport", None), "_process", None)
            pid = getattr(process, "pid", None)
            if pid is None:
                await asyncio.sleep(1.5)
            else:
                await asyncio.to_thread(_wait_idle, pid, settle_timeout)
            start = time.perf_counter()
            await client.query(PROMPT)
            result, ttft = await _timed(client.receive_response(), start, "warm turn")
            before = time.perf_counter()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 10)
            self.teardowns.append(time.perf_counter() - before)
            return result, ttft
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 10)
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_idle(pid: int, timeout: float) -> None:
    """Until the process used under 4 CPU-ms in a 100 ms window (it waits for input)."""
    try:
        proc = psutil.Process(pid)
        deadline = time.monotonic() + timeout
        before = own_cpu(proc)
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = own_cpu(proc)
            if (now - before) * 1000 < 4:
                return
            before = now
    except psutil.Error:
        return


async def run_direct(direct: DirectSDK, kind: str, runs: int, settle_timeout: float, log: Any,
                     *, warmup: bool = True, label: str = "") -> Sample:
    sample = Sample()
    me = psutil.Process()
    if warmup:  # one discarded run: first-time costs (disk cache, imports) are not what is measured
        with contextlib.suppress(Exception):
            await (direct.cold() if kind == "cold" else direct.warm(settle_timeout))
    cpu_before = _self_cpu(me)
    for i in range(runs):
        await asyncio.to_thread(time.sleep, 0.2)
        try:
            wall, ttft = await (direct.cold() if kind == "cold" else direct.warm(settle_timeout))
        except Exception as exc:
            sample.error(f"{type(exc).__name__}: {exc}")
            continue
        sample.wall.append(wall)
        if ttft is not None:
            sample.ttft.append(ttft)
        log(f"  {label or 'direct_' + kind}{_nth(i, runs)}: {wall * 1000:.0f} ms")
    if kind == "cold":
        # Includes the warm-up-free part only; the SDK's Python, the CLI (reaped) and 0.2 s sleeps.
        sample.cpu_s = _self_cpu(me) - cpu_before
    return sample


def _nth(i: int, runs: int) -> str:
    return f" {i + 1}/{runs}" if runs > 1 else ""


def _self_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


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
            log(f"  {label}{_nth(i, runs)}: {wall * 1000:.0f} ms" + (f", TTFT {ttft * 1000:.0f} ms" if ttft else ""))
        # Settle first, so the CPU of the replacement the pool starts afterwards counts here.
        await asyncio.to_thread(wait_settled, ps, want_children=want_children, timeout=settle_timeout)
        sample.cpu_s = tree_cpu(ps) - cpu_before
        sample.own_cpu_s = own_cpu(ps) - own_before
    return sample


@dataclass
class Burst:
    clients: int
    walls: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    error_texts: list[str] = field(default_factory=list)
    peak_rss_total: int = 0
    peak_rss_proxy: int = 0
    peak_cli_processes: int = 0
    cpu_s: float = 0.0


async def run_burst(url: str, ps: psutil.Process, *, clients: int, rounds: int, want_children: int,
                    settle_timeout: float, log: Any) -> Burst:
    """``rounds`` times: ``clients`` simultaneous non-streaming requests (same configuration)."""
    burst = Burst(clients)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
        for r in range(rounds):
            await asyncio.to_thread(wait_settled, ps, want_children=want_children, timeout=settle_timeout)
            cpu_before = tree_cpu(ps)
            with RssSampler(ps) as sampler:
                start = time.perf_counter()
                results = await asyncio.gather(
                    *(proxy_once(client, url, messages_body()) for _ in range(clients)), return_exceptions=True
                )
                wall = time.perf_counter() - start
            burst.cpu_s += tree_cpu(ps) - cpu_before
            burst.walls.append(wall)
            burst.requests += clients
            for result in results:
                if isinstance(result, BaseException):
                    burst.errors += 1
                    if len(burst.error_texts) < 5:
                        burst.error_texts.append(f"{type(result).__name__}: {result}"[:300])
            burst.peak_rss_total = max(burst.peak_rss_total, sampler.peak_total)
            burst.peak_rss_proxy = max(burst.peak_rss_proxy, sampler.peak_own)
            burst.peak_cli_processes = max(burst.peak_cli_processes, sampler.peak_children)
            log(f"  {clients} concurrent, round {r + 1}/{rounds}: {wall:.2f} s, errors so far {burst.errors}")
    return burst


def detect_pool(ps: psutil.Process, timeout: float) -> int:
    """How many pre-started CLIs the proxy keeps after a request (0: no warm pool)."""
    wait_settled(ps, want_children=1, timeout=timeout)
    return len(cli_children(ps))


async def _timed(messages: Any, start: float, what: str) -> tuple[float, float | None]:
    """Seconds from ``start`` to the ResultMessage and to the first text delta of a turn."""
    import claude_agent_sdk as sdk

    ttft = result = None
    async for message in messages:
        if ttft is None and isinstance(message, sdk.StreamEvent) \
                and message.event.get("type") == "content_block_delta":
            ttft = time.perf_counter() - start
        if isinstance(message, sdk.ResultMessage):
            result = time.perf_counter() - start
            if message.is_error:
                raise RuntimeError(f"{what} failed: {message.result}")
    if result is None:
        raise RuntimeError(f"{what} ended without a ResultMessage")
    return result, ttft
