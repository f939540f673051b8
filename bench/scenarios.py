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


class ReusedSDK:
    """One ``ClaudeSDKClient`` with the proxy's options, serving turn after turn: each turn
    sends a user message with a uuid, reads to the ``ResultMessage``, then rewinds the
    conversation to before that message (``rewind_conversation``), as the proxy does
    between requests.  The floor of a reused CLI, without HTTP or the proxy."""

    def __init__(self, direct: DirectSDK) -> None:
        self.direct = direct
        self.client: Any = None
        self.workdir: Path | None = None
        self.cli: psutil.Process | None = None
        self.rewinds: list[float] = []
        """Seconds each rewind took (after the ResultMessage; not part of the turn's latency)."""
        self._messages: Any = None

    async def open(self, settle_timeout: float) -> None:
        import claude_agent_sdk as sdk

        self.workdir = self.direct._workdir()
        self.client = sdk.ClaudeSDKClient(self.direct.options(self.workdir))
        await self.client.connect()
        self._messages = self.client.receive_messages().__aiter__()
        process = getattr(getattr(self.client, "_transport", None), "_process", None)
        self.cli = psutil.Process(process.pid) if process is not None else None
        await asyncio.to_thread(self.settle, settle_timeout)

    def settle(self, timeout: float) -> None:
        if self.cli is not None:
            _wait_idle(self.cli.pid, timeout)

    async def turn(self, settle_timeout: float) -> tuple[float, float | None, float]:
        """One turn (on the settled CLI, unless ``settle_timeout`` is 0): seconds to the
        ResultMessage, seconds to the first delta, and this driver's CPU-seconds for the turn
        and its rewind (the SDK's Python side; the CLI's own is ``cli_cpu``)."""
        if self.client is None:
            await self.open(settle_timeout)
        if settle_timeout > 0:
            await asyncio.to_thread(self.settle, settle_timeout)
        uid = str(uuid.uuid4())
        message = {"type": "user", "message": {"role": "user", "content": PROMPT},
                   "parent_tool_use_id": None, "uuid": uid}
        driver_before = time.thread_time()  # the event loop's thread: the SDK runs there
        start = time.perf_counter()
        await self.client.query(_one(message))
        wall, ttft = await _timed(_until_result(self._messages), start, "reused turn")
        before = time.perf_counter()
        response = await self.client._query._send_control_request(
            {"subtype": "rewind_conversation", "target_message_uuid": uid, "last_seen_user_message_uuid": uid})
        self.rewinds.append(time.perf_counter() - before)
        if not isinstance(response, dict) or response.get("rewound") is not True:
            raise RuntimeError(f"rewind refused: {response!r}"[:300])
        return wall, ttft, time.thread_time() - driver_before

    def cli_cpu(self) -> float:
        return 0.0 if self.cli is None else own_cpu(self.cli)

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.disconnect(), 10)
            self.client = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


async def _one(message: dict[str, Any]) -> Any:
    yield message


async def _until_result(messages: Any) -> Any:
    """The persistent message stream up to and including this turn's ResultMessage."""
    import claude_agent_sdk as sdk

    async for message in messages:
        yield message
        if isinstance(message, sdk.ResultMessage):
            return


async def run_reused(reused: ReusedSDK, runs: int, settle_timeout: float, log: Any, *, label: str = "") -> Sample:
    """``runs`` reused turns (see ``ReusedSDK``), each on a settled CLI.  CPU: the driver's
    for each turn, and the CLI's until it has settled after the turn, as ``run_proxy``
    counts the proxy's tree."""
    sample = Sample()
    if reused.client is None:
        await reused.open(settle_timeout)
    cpu = 0.0
    for i in range(runs):
        await asyncio.to_thread(reused.settle, settle_timeout)
        cli_before = reused.cli_cpu()
        try:
            wall, ttft, driver = await reused.turn(0.0)
        except Exception as exc:
            sample.error(f"{type(exc).__name__}: {exc}")
            await reused.close()  # a fresh CLI for the next turn
            await reused.open(settle_timeout)
            continue
        await asyncio.to_thread(reused.settle, settle_timeout)
        cpu += driver + reused.cli_cpu() - cli_before
        sample.wall.append(wall)
        if ttft is not None:
            sample.ttft.append(ttft)
        log(f"  {label or 'direct_reused'}{_nth(i, runs)}: {wall * 1000:.0f} ms"
            + (f", TTFT {ttft * 1000:.0f} ms" if ttft else ""))
    sample.cpu_s = cpu
    return sample


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


async def run_direct(direct: DirectSDK, runs: int, log: Any, *, warmup: bool = True, label: str = "") -> Sample:
    """``runs`` cold ``query()`` calls, one after the other."""
    sample = Sample()
    me = psutil.Process()
    if warmup:  # one discarded run: first-time costs (disk cache, imports) are not what is measured
        with contextlib.suppress(Exception):
            await direct.cold()
    cpu_before = _self_cpu(me)
    for i in range(runs):
        await asyncio.to_thread(time.sleep, 0.2)
        try:
            wall, ttft = await direct.cold()
        except Exception as exc:
            sample.error(f"{type(exc).__name__}: {exc}")
            continue
        sample.wall.append(wall)
        if ttft is not None:
            sample.ttft.append(ttft)
        log(f"  {label or 'direct_cold'}{_nth(i, runs)}: {wall * 1000:.0f} ms")
    # The SDK's Python, the CLI (reaped) and the 0.2 s sleeps (idle).
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


class _Window:
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
    window = _Window(clients)
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


async def run_direct_load(direct: DirectSDK, *, clients: int, duration: float, settle_timeout: float,
                          log: Any) -> Load:
    """The floor of ``run_load``: ``clients`` reused SDK clients (see ``ReusedSDK``), each
    taking turns back to back for ``duration`` seconds; CPU of the CLIs and of this driver."""
    load = Load(clients, duration)
    drivers = [ReusedSDK(direct) for _ in range(clients)]
    window = _Window(clients)
    try:
        for driver in drivers:
            await driver.open(settle_timeout)

        async def one_client(index: int, driver: ReusedSDK) -> None:
            while not window.stop:
                sent = time.perf_counter()
                try:
                    await driver.turn(0.0)  # no settling: back to back
                except Exception as exc:
                    load.fail(exc)
                    return
                window.answered(index, sent, time.perf_counter())

        me = psutil.Process()
        cpu_before = sum(d.cli_cpu() for d in drivers) + own_cpu(me)  # nothing else runs here meanwhile
        window.started = time.perf_counter()
        tasks = [asyncio.create_task(one_client(i, d)) for i, d in enumerate(drivers)]
        try:
            await asyncio.sleep(duration)
            window.ended = time.perf_counter()
            load.cpu_s = sum(d.cli_cpu() for d in drivers) + own_cpu(me) - cpu_before
            load.duration = window.ended - window.started
        finally:
            window.stop = True
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for driver in drivers:
            await driver.close()
    load.latencies = window.latencies
    load.completed = len(window.latencies)
    log(f"  direct, {clients} reused SDK clients: {load.completed} answers in {load.duration:.2f} s")
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
