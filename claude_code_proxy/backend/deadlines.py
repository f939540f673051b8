"""The deadlines of a run (first event, idle gap, total) and the shutdown drain over them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from claude_code_proxy.config.settings import Settings
from claude_code_proxy.exceptions import ClaudeProxyError, GatewayTimeoutError, ServiceUnavailableError


class Drain:
    """Shutdown's hold on every running deadline: once begun, no run outlives ``at``."""

    def __init__(self) -> None:
        self.at: float | None = None
        """The drain deadline (``time.monotonic()``), or None while serving normally."""
        self.scopes: set[anyio.CancelScope] = set()
        self.timeouts: set[asyncio.Timeout] = set()

    @property
    def draining(self) -> bool:
        return self.at is not None

    def begin(self, grace: float) -> None:
        """Refuse new runs, and end the running ones ``grace`` seconds from now."""
        self.at = time.monotonic() + grace
        drain_at = loop_time(self.at)
        for scope in list(self.scopes):
            scope.deadline = min(scope.deadline, drain_at)
        for timeout in list(self.timeouts):
            when = timeout.when()
            timeout.reschedule(drain_at if when is None else min(when, drain_at))


class Deadlines:
    """The three deadlines of a run (first event, idle gap, total) plus a shutdown drain.

    Deadlines are kept as plain floats on the loop's clock; the error for one is built only
    when it fires.  The message loop waits under ``asyncio.timeout_at`` (a timer handle, no
    cancel scope per event), and a shutdown pulls every active timeout forward.
    """

    def __init__(self, settings: Settings, drain: Drain) -> None:
        now = time.monotonic()
        self.settings = settings
        self.drain = drain
        self.total = now + settings.request_timeout
        self.first = now + settings.first_event_timeout
        self.last_event: float | None = None

    def event(self) -> None:
        self.last_event = time.monotonic()

    def deadline(self) -> float:
        gap = self.first if self.last_event is None else self.last_event + self.settings.idle_timeout
        deadline = min(gap, self.total)
        draining = self.drain.at
        return deadline if draining is None else min(deadline, draining)

    def error(self) -> ClaudeProxyError:
        """The error of the deadline that passed."""
        now = time.monotonic()
        draining = self.drain.at
        if draining is not None and draining <= now:
            return ServiceUnavailableError("The proxy is shutting down; the answer was cut short.", retry_after=5)
        if self.total <= now:
            return GatewayTimeoutError(f"The request took longer than {self.settings.request_timeout:g} s.")
        if self.last_event is None:
            return GatewayTimeoutError(
                f"The model did not start answering within {self.settings.first_event_timeout:g} s.")
        return GatewayTimeoutError(f"The answer stalled for more than {self.settings.idle_timeout:g} s.")

    @contextmanager
    def scope(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope for the start-up phase (connect, history), once per run."""
        with anyio.CancelScope(deadline=loop_time(self.deadline())) as scope:
            self.drain.scopes.add(scope)
            try:
                yield scope
            finally:
                self.drain.scopes.discard(scope)

    def check(self, scope: anyio.CancelScope) -> None:
        """Raise the right error if ``scope`` ended because a deadline passed."""
        if scope.cancelled_caught:
            raise self.error()

    async def next_message(self, messages: AsyncIterator[Any]) -> Any:
        """The CLI's next message, or the error of whichever deadline passes first."""
        timeout = asyncio.timeout_at(loop_time(self.deadline()))
        timeouts = self.drain.timeouts
        try:
            async with timeout:
                timeouts.add(timeout)
                try:
                    return await messages.__anext__()
                finally:
                    timeouts.discard(timeout)
        except TimeoutError:
            if timeout.expired():
                raise self.error() from None
            raise


def loop_time(monotonic_deadline: float) -> float:
    """A time.monotonic() deadline on the event loop's clock (anyio and asyncio use it).

    The loop's own clock is read directly: this also runs in plain loop callbacks (the
    shutdown signal), where anyio cannot tell which async library is running.
    """
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())
