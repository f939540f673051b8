"""The server's listening sockets, bound before anything else starts.

``serve`` binds its port first, so a busy port is one clear message naming the port and the
setting that changes it, instead of a startup log followed by uvicorn's bare ``errno 98``.
The bound sockets are handed to uvicorn, so nothing can take the port in between.
Binds like asyncio's ``create_server``: every address of the host, ``SO_REUSEADDR``, IPv6
sockets IPv6-only.
"""

from __future__ import annotations

import errno
import socket


class PortUnavailableError(Exception):
    """The server cannot listen where it is configured to; the message says what to change."""


def open_listeners(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address of ``host`` on ``port``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortUnavailableError(
            f"cannot listen on {host}:{port}: {host!r} is not an address ({exc.strerror}). "
            "Set CLAUDE_PROXY_HOST (or `serve --host`) to an address of this machine; the default is 127.0.0.1."
        ) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    last_error: OSError | None = None
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRNOTAVAIL and len(infos) > 1:
                    last_error = exc  # e.g. "localhost" on a machine without IPv6: use the others
                    continue
                raise
            sockets.append(sock)
        if not sockets:
            raise last_error or OSError(errno.EADDRNOTAVAIL, "no usable address")
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise PortUnavailableError(explain(host, port, exc)) from None
    return sockets


def explain(host: str, port: int, error: OSError) -> str:
    """What went wrong binding host:port, and which setting changes it."""
    where = f"{host}:{port}"
    other = port + 1 if port < 65535 else 8000
    change_port = (
        f"pick another port: CLAUDE_PROXY_PORT={other} (in the environment or .env; "
        f"e.g. `CLAUDE_PROXY_PORT={other} make run`) or `claude-code-proxy serve --port {other}`"
    )
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} is already in use ({where}): another program, or another claude-code-proxy, "
            f"listens there (`claude-code-proxy doctor` tells which). Stop it, or {change_port}."
        )
    if error.errno == errno.EACCES:
        return f"not allowed to listen on port {port} ({where}): ports below 1024 need privileges; {change_port}."
    if error.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: {host} is not an address of this machine. "
            "Set CLAUDE_PROXY_HOST (or `serve --host`); the default is 127.0.0.1."
        )
    return (
        f"cannot listen on {where}: {error.strerror or error}. "
        f"Set CLAUDE_PROXY_HOST / CLAUDE_PROXY_PORT (or `serve --host/--port`); to change the port, {change_port}."
    )
