"""The CLI process life cycle: start, and one end-of-life path for every process.

A process is started for a request (or pre-started by the warm pool) with a private
directory, and may serve further requests of its configuration (backend/reuse.py).
However its life ends (retired, failure, client gone, deadline, shutdown), ``end()`` or
``dispose()`` is the way out: the process ends, is reaped, and what it left in the user's
Claude configuration is removed (backend/footprint.py); then the owner is told it is gone
(its concurrency slot is freed only then), and the SDK client and directory are removed
shortly after, off the response path.  An idle CLI (between turns) has its input closed
and exits by itself, which removes its session record; a CLI mid-turn is killed at once.
``aclose()`` (server shutdown) ends every process still alive.
"""

from __future__ import annotations

import asyncio
import datetime
import os
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

from claude_code_proxy.backend.footprint import ConfigPlaces, config_places, forget_leftovers
from claude_code_proxy.backend.relay import Gate, UpstreamRelay

AFTER_RESPONSE_S = 0.03
"""How long after an answer its cleanup and the next warm start begin."""
EXIT_GRACE_S = 2.0
"""How long an idle CLI may take to exit by itself once its input is closed before it is
killed (measured: about 0.1 s on an idle machine, 0.2 s typical and 0.8 s at most on a
loaded one)."""
REAP_WAIT_S = 2.0
"""How long a killed CLI is waited for (it is gone within milliseconds)."""


@dataclass(eq=False)  # compared and hashed by identity: the set of live processes holds it
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
    places: ConfigPlaces | None = field(default_factory=lambda: config_places(os.environ))
    """Where it keeps its state: the environment it inherited at spawn tells."""
    gone: bool = False
    """Ended and reaped, and what it left removed."""
    gate: Gate | None = None
    """What it may send upstream, when its calls go through the relay (backend/relay.py)."""
    relay_url: str | None = None

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
    """SIGKILL the CLI at once (it is reaped and its leftovers removed by ``Processes.end``)."""
    process = process_of(prepared.client)
    if process is not None and process.returncode is None:
        with suppress(Exception):
            process.kill()


async def _stop(prepared: Prepared, *, idle: bool) -> None:
    """End the process, wait until it is gone, then remove what it left behind.

    An ``idle`` CLI (between turns) is ended the way it ends itself: its input closed, it
    completes its writes to the user's Claude configuration, removes its session record and
    exits.  A CLI mid-turn, or one that has not exited after ``EXIT_GRACE_S``, is killed;
    once it is reaped its leftovers are removed (backend/footprint.py).
    """
    process = process_of(prepared.client)
    if process is None or prepared.gone:
        return
    with anyio.CancelScope(shield=True):
        transport = getattr(prepared.client, "_transport", None)
        if idle and process.returncode is None and transport is not None:
            with anyio.move_on_after(EXIT_GRACE_S), suppress(Exception):
                await transport.end_input()
                await process.wait()
        kill_now(prepared)
        with anyio.move_on_after(REAP_WAIT_S), suppress(Exception):
            await process.wait()
        if process.returncode is not None and not prepared.gone:
            prepared.gone = True
            # Off the event loop: a few directory reads (~1 ms) while answers are written out.
            with suppress(Exception):
                await anyio.to_thread.run_sync(forget_leftovers, prepared.places, process.pid)


class Processes:
    """Every CLI process the backend owns, and the background work that ends them."""

    def __init__(self, relay: UpstreamRelay | None = None) -> None:
        self.relay = relay
        """Where the CLIs send their API calls, if not upstream directly."""
        self.spawned = 0
        """CLI processes started (tests assert that bad input starts none)."""
        self._live: set[Prepared] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._pending: dict[asyncio.TimerHandle, Callable[[], None]] = {}

    async def start(self, options: Callable[[Path, str | None], ClaudeAgentOptions]) -> Prepared:
        """Start and initialize a CLI in a fresh private directory (a cold start), with a
        relay path and gate of its own when calls go through the relay."""
        relay_url, gate = None, None
        if self.relay is not None:
            await self.relay.start()
            relay_url, gate = self.relay.register(os.environ.get("ANTHROPIC_BASE_URL"))
        try:
            workdir = Path(tempfile.mkdtemp(prefix="claude-proxy-"))
            (workdir / "tmp").mkdir(mode=0o700)
            client = ClaudeSDKClient(options(workdir, relay_url))
        except BaseException:
            if self.relay is not None and relay_url is not None:
                self.relay.forget(relay_url)
            raise
        self.spawned += 1
        prepared = Prepared(client, workdir, gate=gate, relay_url=relay_url)
        self._live.add(prepared)
        try:
            await client.connect()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.dispose(prepared, idle=False)
            raise
        return prepared

    def end(self, prepared: Prepared, on_reaped: Callable[[], None], *, idle: bool = False) -> None:
        """The end of a process's life after a request: ``idle`` (its turn is over) it exits by
        itself, else it is killed now; once reaped and its leftovers removed, ``on_reaped``;
        its client and directory are removed just after."""
        if not idle:
            kill_now(prepared)

        async def finish() -> None:
            await _stop(prepared, idle=idle)
            on_reaped()
            self._later(lambda: self.dispose(prepared))

        self.background(finish)

    async def dispose(self, prepared: Prepared, *, idle: bool = True) -> None:
        """End ``prepared`` (idle by default: a ready CLI in the pool) and remove its client
        and directory."""
        with anyio.CancelScope(shield=True):
            await _stop(prepared, idle=idle)
            with anyio.move_on_after(6), suppress(Exception):
                await prepared.client.disconnect()
            self._live.discard(prepared)
            shutil.rmtree(prepared.workdir, ignore_errors=True)
            if self.relay is not None and prepared.relay_url is not None:
                self.relay.forget(prepared.relay_url)

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

    async def aclose(self) -> None:
        """End every CLI still running and finish all pending cleanup (server shutdown).

        The warm pool's idle CLIs are gone by now (they exit by themselves); what is left is
        still serving or being reset: killed at once, all together, then cleaned up.
        """
        with anyio.CancelScope(shield=True):
            live = list(self._live)
            for prepared in live:
                kill_now(prepared)
            await asyncio.gather(*(self.dispose(prepared, idle=False) for prepared in live), return_exceptions=True)
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
            if self.relay is not None:
                await self.relay.aclose()
