"""The HTTP server: uvicorn, with the connection limits it lacks, as ``serve`` runs it.

uvicorn bounds what a connection may send (h11's 16 KiB head limit) but not how long it
may take, and it keeps every connection a client opens.  A proxy bound beyond loopback
could be starved of file descriptors by clients that open sockets and send a header a
byte at a time.  ``GuardedH11Protocol`` adds:

- a cap on open connections: one beyond ``max_connections`` is answered 503 and closed;
- a deadline for each request's head (``header_timeout``, from the connection's start or
  the previous answer's end): a head not in by then ends the connection (with a 408 if
  part of it came);
- nothing for a body still arriving after its answer (a 401 sent before the body came):
  uvicorn reads and drops the rest, and its keep-alive timeout closes the connection if the
  body and the next head are not in by then.  Closing at once instead would reset a
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
    """uvicorn's h11 protocol with a connection cap and a deadline for request heads."""

    header_timeout = 10.0
    max_connections = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            self.transport.write(TOO_MANY)
            self.transport.close()
            return
        self._watch_head()  # a connection that never sends a byte is held to the same deadline

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def _watch_head(self) -> None:
        """The head deadline runs while a request head is awaited, from the moment it is."""
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)
        else:
            self._stop_head_deadline()

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        partial_head, _ = self.conn.trailing_data
        if partial_head:  # part of a request came: say why it is dropped (else just close)
            self.transport.write(HEAD_TOO_SLOW)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """The protocol class with this server's limits (uvicorn instantiates it per connection)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout": settings.header_timeout,
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
