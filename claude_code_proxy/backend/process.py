"""The CLI process life cycle: start, and one end-of-life path for every process.

A process is started for a request (or pre-started by the warm pool) in a private
directory, and may serve further requests of its configuration (backend/reuse.py).
However its life ends (retired, failure, client gone, deadline, shutdown), ``end()`` is
the one way out: kill, reap, tell the
owner the process is gone (its concurrency slot is freed only then), and remove the SDK
client and directory shortly after, off the response path.  ``aclose()`` (server
shutdown) ends every process still alive.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient

AFTER_RESPONSE_S = 0.03
"""How long after an answer its cleanup and the next warm start begin."""


@dataclass
class Prepared:
    """A started, initialized CLI and its private directory; one request at a time."""

    client: ClaudeSDKClient
    workdir: Path
    started: float = field(default_factory=time.monotonic)
    day: datetime.date = field(default_factory=datetime.date.today)
    """The local date it started on: the CLI tells the model when the date changes, which a
    fresh CLI never would, so a CLI is retired when the date moves on."""
    uses: int = 0
    """Requests it has served."""
    cost_seen: float = 0.0
    """Its cumulative cost figure after the last request (the CLI's totals never reset)."""
    messages: AsyncIterator[Any] | None = None
    """Its one message stream, opened at the first request and kept for the next."""

    def stream(self) -> AsyncIterator[Any]:
        if self.messages is None:
            self.messages = self.client.receive_messages().__aiter__()
        return self.messages

    def rss_mib(self) -> float | None:
        """Resident memory of the CLI process, where the platform tells (Linux)."""
        process = process_of(self.client)
        if process is None:
            return None
        try:
            with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            return None
        return None


def process_of(client: ClaudeSDKClient) -> Any:
    """The CLI process behind an SDK client (the SDK has no public handle on it)."""
    return getattr(getattr(client, "_transport", None), "_process", None)


def kill_now(prepared: Prepared) -> None:
    """SIGKILL the CLI at once (it is reaped and cleaned up by ``Processes.end``)."""
    process = process_of(prepared.client)
    if process is not None and process.returncode is None:
        with suppress(Exception):
            process.kill()


async def _kill_and_reap(prepared: Prepared) -> None:
    process = process_of(prepared.client)
    if process is None:
        return
    kill_now(prepared)
    with anyio.CancelScope(shield=True), anyio.move_on_after(2), suppress(Exception):
        await process.wait()


class Processes:
    """Every CLI process the backend owns, and the background work that ends them."""

    def __init__(self) -> None:
        self.spawned = 0
        """CLI processes started (tests assert that bad input starts none)."""
        self._clients: set[ClaudeSDKClient] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._pending: dict[asyncio.TimerHandle, Callable[[], None]] = {}

    async def start(self, options: Callable[[Path], ClaudeAgentOptions]) -> Prepared:
        """Start and initialize a CLI in a fresh private directory (a cold start)."""
        workdir = Path(tempfile.mkdtemp(prefix="claude-proxy-"))
        (workdir / "tmp").mkdir(mode=0o700)
        client = ClaudeSDKClient(options(workdir))
        self.spawned += 1
        prepared = Prepared(client, workdir)
        self._clients.add(client)
        try:
            await client.connect()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.dispose(prepared)
            raise
        return prepared

    def end(self, prepared: Prepared, on_reaped: Callable[[], None]) -> None:
        """The end of a process's life: killed now, reaped, ``on_reaped``, and its client and
        directory removed just after."""
        kill_now(prepared)

        async def finish() -> None:
            await _kill_and_reap(prepared)
            on_reaped()

        self.background(finish)
        self._later(lambda: self.dispose(prepared))

    async def dispose(self, prepared: Prepared) -> None:
        with anyio.CancelScope(shield=True):
            await self._teardown(prepared.client)
            self._clients.discard(prepared.client)
            shutil.rmtree(prepared.workdir, ignore_errors=True)

    def background(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` as a task that shutdown waits for."""
        task = asyncio.get_running_loop().create_task(work())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _later(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` shortly, after the current answer has been written out.

        Cleanup does synchronous work on the event loop; started at once it would delay
        the response by ~10 ms.  ``aclose()`` starts whatever is still waiting.
        """
        loop = asyncio.get_running_loop()

        def start() -> None:
            self._pending.pop(handle, None)
            self.background(work)

        handle = loop.call_later(AFTER_RESPONSE_S, start)
        self._pending[handle] = start

    @staticmethod
    async def _teardown(client: ClaudeSDKClient) -> None:
        """Kill the CLI, then close the SDK client around it."""
        process = process_of(client)
        if process is not None and process.returncode is None:
            with suppress(Exception):
                process.kill()
        with anyio.move_on_after(6), suppress(Exception):
            await client.disconnect()
        if process is not None and process.returncode is None:
            with anyio.move_on_after(2), suppress(Exception):
                await process.wait()

    async def aclose(self) -> None:
        """Kill every CLI still running and finish all pending cleanup (server shutdown)."""
        with anyio.CancelScope(shield=True):
            for client in list(self._clients):
                await self._teardown(client)
            deadline = asyncio.get_running_loop().time() + 15
            while self._pending or self._cleanups:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                for handle, start in list(self._pending.items()):
                    handle.cancel()
                    start()  # cleanups scheduled for "just after the answer": now
                if self._cleanups:
                    await asyncio.wait(list(self._cleanups), timeout=max(0.1, left))
