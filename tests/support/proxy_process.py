"""The proxy as a real subprocess (``python -m claude_code_proxy serve``), and raw HTTP.

``proxy_process()`` starts the server with the test's environment plus overrides, in an
empty working directory (so no ``.env`` is read), captures its stdout and stderr in one
log file, waits until ``/health/live`` answers, and always stops it (and any CLI it left)
on exit.  ``raw_request()`` speaks HTTP/1.1 over a plain socket, for requests that httpx
would refuse to send or would send differently (odd Host headers, a body never sent).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support.procs import SETTLE, live_cli_pids, wait_until

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ProxyProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    children_seen: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def live_cli_children(self) -> list[int]:
        """Live ``claude`` descendants (a zombie leader with running threads counts as live)."""
        found = live_cli_pids(self.proc.pid)
        self.children_seen.update(found)
        return found

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def metric(self, name: str, headers: dict[str, str] | None = None) -> float:
        """An unlabelled gauge or counter from ``/metrics``, as the server counts it now."""
        text = httpx.get(f"{self.url}/metrics", headers=headers, timeout=30).text
        for line in text.splitlines():
            if line.split(" ", 1)[0] == name:
                return float(line.split()[1])
        raise KeyError(f"{name} is not in /metrics")


def proxy_env(overrides: dict[str, str | None]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("CLAUDE_PROXY_USAGE_DB", "")
    env.setdefault("CLAUDE_PROXY_WARM_POOL_SIZE", "0")
    env.setdefault("CLAUDE_PROXY_CLI_MAX_RETRIES", "0")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def serve_command(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "claude_code_proxy", "serve", "--port", str(port), *args]


@contextmanager
def proxy_process(
    workdir: Path, env: dict[str, str | None] | None = None, args: tuple[str, ...] = (), ready_timeout: float = 30.0
) -> Iterator[ProxyProcess]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"proxy-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            serve_command(port, *args), cwd=workdir, env=proxy_env(env or {}),
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    running = ProxyProcess(proc, port, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the proxy exited with {proc.returncode}:\n{running.logs()}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{running.url}/health/live", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the proxy did not start:\n{running.logs()}")
            time.sleep(0.1)
        yield running
    finally:
        stop(running)


def stop(running: ProxyProcess) -> None:
    """Stop the server and any CLI it started (by pid, never by name)."""
    with suppress(psutil.Error):
        for child in psutil.Process(running.proc.pid).children(recursive=True):
            running.children_seen.add(child.pid)
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        try:
            running.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            running.proc.kill()
            running.proc.wait(timeout=5)
    for pid in running.children_seen:
        with suppress(psutil.Error, OSError):
            child = psutil.Process(pid)
            if child.name() == "claude":
                child.kill()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> object:
        return json.loads(self.body)


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 30.0) -> RawResponse:
    """Send ``head`` (request line and headers, ending with a blank line) then ``body``;
    read one response (by Content-Length, or until the server closes)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        if body:
            sock.sendall(body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header_blob, _, rest = data.partition(b"\r\n\r\n")
        lines = header_blob.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(rest) < length:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            rest += chunk
        return RawResponse(status, headers, rest[:length] if length >= 0 else rest, time.monotonic() - started)


def post_and_leave(port: int, path: str, body: dict[str, Any], until: Callable[[], object]) -> None:
    """POST ``body`` as JSON, wait (SETTLE at most) until ``until()`` holds, then hang up
    without reading a byte: a client that leaves while a non-streaming answer is being made."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=SETTLE) as sock:
        sock.sendall(head("POST", path, {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json",
                                         "Content-Length": str(len(data))}) + data)
        assert wait_until(until), "the condition to leave on never held"


def head(method: str, path: str, headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in items), "", ""]
    return "\r\n".join(lines).encode("latin-1")


__all__ = ["ProxyProcess", "RawResponse", "free_port", "head", "post_and_leave", "proxy_env", "proxy_process",
           "raw_request", "serve_command", "stop"]
