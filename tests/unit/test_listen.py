"""`serve` binds its port before anything starts: a busy port is one clear message naming the
port and the setting that changes it (no startup log, no traceback, no bare errno)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from claude_code_proxy.web.listen import PortUnavailableError, open_listeners

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def occupied() -> Iterator[int]:
    """A port some other program listens on (bound the way servers bind: SO_REUSEADDR)."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_busy_port_names_the_port_and_the_setting() -> None:
    with occupied() as port, pytest.raises(PortUnavailableError) as caught:
        open_listeners("127.0.0.1", port)
    message = str(caught.value)
    assert f"port {port} is already in use" in message
    assert f"CLAUDE_PROXY_PORT={port + 1}" in message and f"--port {port + 1}" in message


def test_serve_on_a_busy_port_exits_with_the_message(tmp_path: Path) -> None:
    with occupied() as port:
        result = subprocess.run(
            [sys.executable, "-m", "claude_code_proxy", "serve", "--port", str(port)],
            capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO), "CLAUDE_PROXY_USAGE_DB": ""},
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"claude-code-proxy: port {port} is already in use (127.0.0.1:{port})")
    assert "CLAUDE_PROXY_PORT" in result.stderr
    assert "Traceback" not in result.stderr and "startup" not in (result.stdout + result.stderr).lower()


def test_free_port_binds_every_address_of_the_host() -> None:
    sockets = open_listeners("localhost", 0)
    try:
        assert sockets and all(s.getsockname()[0] in ("127.0.0.1", "::1") for s in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_an_address_of_another_machine_names_the_host_setting() -> None:
    # TEST-NET-1 is never a local address; binding it fails here, and sends nothing anywhere.
    with pytest.raises(PortUnavailableError) as caught:
        open_listeners("192.0.2.1", 8000)
    assert "192.0.2.1 is not an address of this machine" in str(caught.value)
    assert "CLAUDE_PROXY_HOST" in str(caught.value)
