"""The floor: the SDK driven directly, with the options the proxy builds, and no proxy.

``DirectSDK.cold()`` is one cold ``query()``; ``ReusedSDK`` keeps one ``ClaudeSDKClient``
and rewinds its conversation after every turn, as the proxy does between requests.  Wall
is until the ``ResultMessage``, TTFT until the first ``content_block_delta`` StreamEvent.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from bench.harness import own_cpu
from bench.scenarios import PROMPT, Load, Sample, Window, messages_body, nth


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
            return await timed(sdk.query(prompt=PROMPT, options=options), start, "query()")
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
        wall, ttft = await timed(_until_result(self._messages), start, "reused turn")
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
        log(f"  {label or 'direct_reused'}{nth(i, runs)}: {wall * 1000:.0f} ms"
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
        log(f"  {label or 'direct_cold'}{nth(i, runs)}: {wall * 1000:.0f} ms")
    # The SDK's Python, the CLI (reaped) and the 0.2 s sleeps (idle).
    sample.cpu_s = _self_cpu(me) - cpu_before
    return sample


def _self_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


async def run_direct_load(direct: DirectSDK, *, clients: int, duration: float, settle_timeout: float,
                          log: Any) -> Load:
    """The floor of ``run_load``: ``clients`` reused SDK clients (see ``ReusedSDK``), each
    taking turns back to back for ``duration`` seconds; CPU of the CLIs and of this driver."""
    load = Load(clients, duration)
    drivers = [ReusedSDK(direct) for _ in range(clients)]
    window = Window(clients)
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


async def timed(messages: Any, start: float, what: str) -> tuple[float, float | None]:
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
