"""Bounded work: at most N CLI processes, a bounded queue with a wait limit, 503 beyond.

A request waits for a slot only while the queue has room and only for ``queue_timeout``
seconds; otherwise it is refused at once with ``Retry-After``.  Waiting is cancellable: a
client that leaves while queued never gets a slot, so it never spawns a CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from claude_code_proxy.exceptions import ServiceUnavailableError


class Admission:
    def __init__(self, max_concurrency: int, queue_size: int, queue_timeout: float) -> None:
        self.limit = max_concurrency
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.active = 0
        self.waiting = 0
        self.peak = 0
        self._freed = anyio.Condition()

    def _busy(self, why: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"The proxy is busy ({why}); retry shortly.", retry_after=max(1.0, min(self.queue_timeout, 5.0))
        )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.limit:
            if self.waiting >= self.queue_size:
                raise self._busy("queue full")
            self.waiting += 1
            admitted = False
            try:
                with anyio.move_on_after(self.queue_timeout):
                    async with self._freed:
                        while self.active >= self.limit:
                            await self._freed.wait()
                        self._take()
                        admitted = True
            finally:
                self.waiting -= 1
            if not admitted:
                raise self._busy("waited too long for a free slot")
        else:
            self._take()
        try:
            yield
        finally:
            self.active -= 1
            with anyio.CancelScope(shield=True):
                async with self._freed:
                    self._freed.notify_all()

    def _take(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
