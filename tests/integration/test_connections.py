"""Slow and numerous clients (issue 13, item 4), with real sockets against the real server
process: heads and bodies that never finish are cut off at their deadlines, and open
connections are capped, so a proxy bound beyond loopback cannot be starved of file
descriptors.  Small limits are configured so the test is quick; the defaults are in
docs/configuration.md.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.procs import peak_of, wait_until
from tests.support.proxy_process import ProxyProcess, proxy_process

LIMITS = {"CLAUDE_PROXY_HEADER_TIMEOUT": "2", "CLAUDE_PROXY_BODY_TIMEOUT": "2", "CLAUDE_PROXY_MAX_CONNECTIONS": "100"}
HALF_HEAD = b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"


def read_until_closed(sockets: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """Everything each socket receives until the server closes it (or ``timeout`` passes)."""
    received = {sock: b"" for sock in sockets}
    open_ = set(sockets)
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                received[sock] += chunk
                if not chunk:
                    selector.unregister(sock)
                    open_.discard(sock)
    assert not open_, f"{len(open_)} connections are still open"
    return received


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with proxy_process(tmp_path_factory.mktemp("limited"), LIMITS) as running:
        yield running


def still_serves(proxy: ProxyProcess) -> bool:
    return httpx.get(f"{proxy.url}/health/live", timeout=30).status_code == 200


def test_a_thousand_half_sent_heads_are_capped_and_cut_off(tmp_path: Path) -> None:
    # A head deadline long enough for the proxy to have accepted more than the cap at once
    # even on a loaded machine (with 2 s it once closed each one before the next hundred
    # were accepted, so none was beyond the cap).
    with proxy_process(tmp_path, {**LIMITS, "CLAUDE_PROXY_HEADER_TIMEOUT": "10"}) as proxy, ExitStack() as stack:
        base = psutil.Process(proxy.proc.pid).num_fds()
        sockets = []
        with peak_of(psutil.Process(proxy.proc.pid).num_fds) as peak:
            for _ in range(1_000):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", proxy.port), timeout=30))
                sock.sendall(HALF_HEAD)
                sock.setblocking(False)
                sockets.append(sock)
            replies = read_until_closed(sockets, timeout=120)
        statuses = [status_of(reply) for reply in replies.values()]
        # Beyond the cap, a 503 at once; within it, 408 when the head is late. Every one closed.
        assert set(statuses) <= {503, 408}, set(statuses)
        assert statuses.count(408) >= 1 and statuses.count(503) >= 1
        # The cap, plus connections beyond it in the few loop turns before they are closed.
        assert peak[0] <= base + 2 * 100, f"{peak[0]} descriptors open (base {base})"
        assert still_serves(proxy)
        assert wait_until(lambda: psutil.Process(proxy.proc.pid).num_fds() <= base + 5, timeout=30)


def test_a_silent_connection_is_closed_at_the_head_deadline(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.setblocking(False)
        assert read_until_closed([sock], timeout=60)[sock] == b""  # nothing was asked: no answer
    assert still_serves(proxy)


def test_fifty_trickled_bodies_get_408_in_the_api_shape_and_are_closed(proxy: ProxyProcess) -> None:
    head = HALF_HEAD + b"content-length: 100000\r\n\r\n" + b'{"model": "sonnet", '
    with ExitStack() as stack:
        sockets = []
        for _ in range(50):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", proxy.port), timeout=30))
            sock.sendall(head)
            sockets.append(sock)
        stop = threading.Event()

        def trickle() -> None:  # one byte per socket every 0.2 s, as long as the server listens
            while not stop.is_set():
                for sock in sockets:
                    try:
                        sock.send(b" ")
                    except OSError:
                        pass
                stop.wait(0.2)

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            for sock in sockets:
                sock.setblocking(False)
            replies = read_until_closed(sockets, timeout=120)
        finally:
            stop.set()
            trickler.join()
        for reply in replies.values():
            assert status_of(reply) == 408, reply[:200]
            assert b'"type":"error"' in reply and b"did not arrive within 2 seconds" in reply
        assert still_serves(proxy)


def read_reply(sock: socket.socket) -> bytes:
    """One whole answer (head and a content-length body) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before a whole body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_an_answer_sent_before_the_body_came_leaves_the_connection_usable(proxy: ProxyProcess) -> None:
    # A refusal (415 here, 401 without a key) answers from the head alone.  The client's body
    # may still be on its way (through a container's port forwarder it often is): the
    # connection it was told it may keep must still serve its next request.
    body = b"x" * 5000
    head = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(head)
        refused = read_reply(sock)  # the whole answer is in before a byte of the body is sent
        assert status_of(refused) == 415 and b"connection: close" not in refused.lower()
        sock.sendall(body)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(read_reply(sock)) == 200


def test_a_body_too_large_is_refused_with_connection_close(proxy: ProxyProcess) -> None:
    head = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (64 * 1024 * 1024))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(head)
        refused = read_reply(sock)
        assert status_of(refused) == 413 and b"connection: close" in refused.lower()
        sock.setblocking(False)
        assert read_until_closed([sock], timeout=60)[sock] == b""  # closed, not kept waiting for 64 MB


def test_a_body_that_stops_after_an_early_answer_is_cut_off(proxy: ProxyProcess) -> None:
    # The answer went out from the head alone; the client sends one byte of its body and
    # stops. The connection is closed at the body deadline, not held open for good.
    head = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: text/plain\r\n"
            b"content-length: 1000000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(head)
        assert status_of(read_reply(sock)) == 415
        sock.sendall(b"x")
        sock.setblocking(False)
        assert read_until_closed([sock], timeout=60)[sock] == b""
    assert still_serves(proxy)
