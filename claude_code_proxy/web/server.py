"""The HTTP server: uvicorn, with the connection limits it lacks, as ``serve`` runs it.

uvicorn bounds what a connection may send (h11's 16 KiB head limit) but not how long it
may take, and it keeps every connection a client opens.  A proxy bound beyond loopback
could be starved of file descriptors by clients that open sockets and send a header a
byte at a time.  ``GuardedH11Protocol`` adds:

- a cap on open connections: one beyond ``max_connections`` is answered 503 and closed;
- a deadline for each request's head (``header_timeout``, from the connection's start or
  the previous answer's end): a head not in by then ends the connection (with a 408 if
  part of it came);
- a deadline for a body still arriving after its answer (a 401 sent before the body came):
  uvicorn reads and drops the rest, and the connection stays usable if the body is in within
  ``body_timeout`` of the answer, else it is closed.  Closing at once would reset a
  connection the client was told it may reuse.  Answers that give up on the body (413, 408)
  say ``connection: close`` (web/guards.py), so uvicorn closes those at once.

``tune_allocator()`` makes large freed blocks go back to the operating system: a 10 MB
answer passes through the proxy as a few 10 MB strings, and glibc would otherwise keep
such blocks in its heap after the first one (it raises its mmap threshold on the first
big free), so the process would stay tens of megabytes larger after a big answer.
"""

from __future__ import annotations

import asyncio
import ctypes
import resource
from contextlib import suppress
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from claude_code_proxy.config.settings import Settings

BIG_BLOCK_BYTES = 1024 * 1024
"""Allocations from this size up are mapped separately and returned when freed."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def _refusal(status: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


TOO_MANY = _refusal("503 Service Unavailable", "Too many open connections.\n")
HEAD_TOO_SLOW = _refusal("408 Request Timeout", "The request's headers did not arrive in time.\n")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap, a deadline for request heads, and one for
    the rest of a body still coming after its answer went out."""

    header_timeout = 10.0
    body_timeout = 60.0
    max_connections = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_for: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            self.transport.write(TOO_MANY)
            self.transport.close()
            return
        self._watch()  # a connection that never sends a byte is held to the same deadline

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _watch(self) -> None:
        """One deadline at a time, from the moment its wait begins (bytes that come do not
        push it back): ``head`` while a request head is awaited; ``drain`` while the rest of
        a body comes after its answer went out (an early 401: uvicorn reads and drops it)."""
        waiting: str | None = None
        if not self.transport.is_closing():
            if self.conn.their_state is h11.IDLE:
                waiting = "head"
            elif self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.DONE:
                waiting = "drain"
        if waiting == self._deadline_for:
            return
        self._stop_deadline()
        if waiting is not None:
            delay = self.header_timeout if waiting == "head" else self.body_timeout
            self._deadline = self.loop.call_later(delay, self._deadline_passed)
            self._deadline_for = waiting

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self._deadline_for = None

    def _deadline_passed(self) -> None:
        waited_for = self._deadline_for
        self._deadline = self._deadline_for = None
        if self.transport.is_closing():
            return
        if waited_for == "head" and self.conn.their_state is h11.IDLE:
            partial_head, _ = self.conn.trailing_data
            if partial_head:  # part of a request came: say why it is dropped (else just close)
                self.transport.write(HEAD_TOO_SLOW)
            self.transport.close()
        elif waited_for == "drain" and self.conn.their_state is h11.SEND_BODY:
            self.transport.close()  # the answer is out; the body never finished


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """The protocol class with this server's limits (uvicorn instantiates it per connection)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout": settings.header_timeout,
        "body_timeout": settings.body_timeout,
        "max_connections": settings.max_connections,
    })


def accept_batch(settings: Settings) -> int:
    return max(8, settings.max_connections // 4)


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (as Go programs do):
    connections, CLI pipes and the ledger then share the most the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    with suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration ``serve`` runs with (tests start servers from it too)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_protocol(settings),
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": int(settings.shutdown_grace) + 3,
        # The listen queue, and how many connections one loop turn accepts: one beyond the
        # cap holds its descriptor for about three loop turns before it is closed, so a
        # burst of connects holds at most about max_connections + 3 x backlog.
        "backlog": accept_batch(settings),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold; a no-op (False) on other C libraries."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, BIG_BLOCK_BYTES))
