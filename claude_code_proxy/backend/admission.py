"""Bounded work: at most N CLI processes, a bounded queue with a wait limit, 503 beyond.

A request waits for a slot only while the queue has room and only for ``queue_timeout``
seconds; otherwise it is refused at once with ``Retry-After``.  Waiting is cancellable: a
client that leaves while queued never gets a slot, so it never spawns a CLI.

A slot is held until its CLI process is gone, which can be a little after the answer was
sent (the process is killed and reaped off the response path), so ``release()`` is a plain
call that anyone holding the slot can make, once.  A freed slot is handed straight to the
oldest waiter, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque

from claude_code_proxy.exceptions import ServiceUnavailableError


class Ticket:
    """One admitted request's slot.  Released exactly once, by whoever ends the work: the
    backend once its CLI is reaped, or the exchange if the run never started."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.taken = False
        """Set by the backend when its run starts: from then on the run releases the slot."""
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self._admission.release()


class Admission:
    def __init__(self, max_concurrency: int, queue_size: int, queue_timeout: float) -> None:
        self.limit = max_concurrency
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.active = 0
        self.waiting = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _busy(self, why: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"The proxy is busy ({why}); retry shortly.", retry_after=max(1.0, min(self.queue_timeout, 5.0))
        )

    async def enter(self) -> Ticket:
        """Wait for a slot (see ``acquire``) and return it as a ticket."""
        await self.acquire()
        return Ticket(self)

    async def acquire(self) -> None:
        """Take a slot, waiting in line if there is room; ServiceUnavailableError if not."""
        if self.active < self.limit and not self._waiters:
            self.active += 1
            self.peak = max(self.peak, self.active)
            return
        if self.waiting >= self.queue_size:
            raise self._busy("queue full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the slot arrived just as the wait ran out: keep it
            raise self._busy("waited too long for a free slot") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            raise
        finally:
            self.waiting -= 1
            if not waiter.done():
                waiter.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self) -> None:
        """Free a slot: the oldest live waiter gets it, else it becomes free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # handed over: ``active`` stays the same
                return
        self.active -= 1
