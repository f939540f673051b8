"""A pool of ready CLI processes, keyed by everything fixed at spawn time.

A request whose key has a ready process takes it (one request at a time: nobody else has
it meanwhile); a request without one starts its own (a cold start).  After the request the
process comes back (``put``) once it has been reset exactly (backend/reuse.py), or, where it
cannot serve again, a replacement for that key is started in the background (``refill``),
so a client that repeats its configuration gets warm starts from its second request on.

Bounds: at most ``size`` ready processes in all, at most ``max_keys`` distinct keys
(least recently used evicted), each process idles ``idle_seconds`` at most, and the pool
never starts a process when the running plus ready processes would exceed the budget the
caller reports (the concurrency limit), so ready processes share the memory budget.

Generic over what a "process" is: the Claude client supplies ``spawn`` and ``dispose``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger(__name__)


@dataclass
class _Ready(Generic[T]):
    item: T
    born: float


class WarmPool(Generic[T]):
    def __init__(
        self,
        *,
        size: int,
        max_keys: int,
        idle_seconds: float,
        spawn: Callable[[Any], Awaitable[T]],
        dispose: Callable[[T], Coroutine[Any, Any, None]],
        budget_left: Callable[[], int],
    ) -> None:
        self.size = size
        self.max_keys = max_keys
        self.idle_seconds = idle_seconds
        self._spawn = spawn
        self._dispose = dispose
        self._budget_left = budget_left
        self._ready: OrderedDict[str, list[_Ready[T]]] = OrderedDict()
        self._starting: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.hits = 0
        self.misses = 0
        self.started = 0
        self.returned = 0
        """Processes put back after serving a request (reset for reuse)."""
        self.on_hit: Callable[[], None] | None = None
        self.on_miss: Callable[[], None] | None = None

    @property
    def enabled(self) -> bool:
        return self.size > 0 and not self._closed

    @property
    def ready_count(self) -> int:
        return sum(len(entries) for entries in self._ready.values())

    @property
    def starting_count(self) -> int:
        return sum(self._starting.values())

    def take(self, key: str) -> T | None:
        """A ready process for ``key`` (removed from the pool for good), or None."""
        if not self.enabled:
            return None
        self._expire()
        entries = self._ready.get(key)
        if entries:
            entry = entries.pop(0)
            if not entries:
                del self._ready[key]
            self.hits += 1
            if self.on_hit:
                self.on_hit()
            return entry.item
        self.misses += 1
        if self.on_miss:
            self.on_miss()
        return None

    def refill(self, key: str, spec: Any) -> None:
        """Start a replacement for ``key`` in the background, within the bounds."""
        if not self.enabled:
            return
        self._expire()
        self._touch(key)
        have = len(self._ready.get(key, [])) + self._starting.get(key, 0)
        if have >= 1:
            return  # one ready process per key: a client's next turn needs exactly one
        if self.ready_count + self.starting_count >= self.size and not self._evict_other(key):
            return
        if self._budget_left() <= 0 and not self._evict_other(key):
            return
        self._starting[key] = self._starting.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._start(key, spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def put(self, key: str, item: T) -> bool:
        """Return a used process that can serve again (reset to a fresh state by the caller).

        False when the pool has no room for it: the caller ends it.  It becomes the key's
        ready process; idle expiry counts from now.
        """
        if not self.enabled:
            return False
        self._expire()
        self._touch(key)
        if self.ready_count + self.starting_count >= self.size and not self._evict_other(key):
            return False
        self._ready.setdefault(key, []).append(_Ready(item, time.monotonic()))
        self._ready.move_to_end(key)
        self.returned += 1
        return True

    def make_room(self) -> None:
        """Give a running request the budget a ready process holds (evict the oldest)."""
        if self._budget_left() <= 0:
            self._evict_other(None)

    async def _start(self, key: str, spec: Any) -> None:
        try:
            item = await self._spawn(spec)
        except Exception as exc:
            log.warning("warm_pool.start_failed", error_class=type(exc).__name__)
            return
        finally:
            self._starting[key] -= 1
            if not self._starting[key]:
                del self._starting[key]
        self.started += 1
        if self._closed or (key not in self._ready and len(self._ready) >= self.max_keys):
            await self._dispose(item)
            return
        self._ready.setdefault(key, []).append(_Ready(item, time.monotonic()))
        self._ready.move_to_end(key)

    def _touch(self, key: str) -> None:
        if key in self._ready:
            self._ready.move_to_end(key)
        while len(self._ready) > self.max_keys or (key not in self._ready and len(self._ready) >= self.max_keys):
            oldest = next(iter(self._ready))
            self._discard(self._ready.pop(oldest))

    def _evict_other(self, keep: str | None) -> bool:
        for key in list(self._ready):
            if key != keep and self._ready[key]:
                entry = self._ready[key].pop(0)
                if not self._ready[key]:
                    del self._ready[key]
                self._discard([entry])
                return True
        return False

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.idle_seconds
        for key in list(self._ready):
            fresh = [e for e in self._ready[key] if e.born >= cutoff]
            stale = [e for e in self._ready[key] if e.born < cutoff]
            if stale:
                self._discard(stale)
            if fresh:
                self._ready[key] = fresh
            else:
                del self._ready[key]

    def _discard(self, entries: list[_Ready[T]]) -> None:
        for entry in entries:
            task = asyncio.get_running_loop().create_task(self._dispose(entry.item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def sweep_forever(self) -> None:
        """Expire idle processes even when no request comes."""
        while not self._closed:
            await asyncio.sleep(min(5.0, self.idle_seconds / 2))
            self._expire()

    async def aclose(self) -> None:
        """Stop every ready and starting process (server shutdown)."""
        self._closed = True
        entries = [entry for entries in self._ready.values() for entry in entries]
        self._ready.clear()
        for task in list(self._tasks):
            with suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout=10)
        # All at once: an idle process takes ~0.1 s to exit by itself, and shutdown is bounded.
        await asyncio.gather(*(self._dispose(entry.item) for entry in entries), return_exceptions=True)
