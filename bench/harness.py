"""Processes the benchmark starts (fake upstream, proxy) and how it measures them.

Everything started here runs in its own session (process group) and is stopped by
``stop()`` from a ``finally``: SIGTERM first, then SIGKILL to the whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
FAKE_KEY = "sk-ant-api03-fake-upstream-key"
_SCRUB = ("CLAUDE_PROXY_", "ANTHROPIC_", "CLAUDE_CODE_")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_group(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM the process, wait ``grace`` s, then SIGKILL its whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the CLIs it may have left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class FakeUpstreamProcess:
    """tests/support/fake_upstream.py in its own process, so its CPU is nobody else's."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> FakeUpstreamProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_upstream"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # it prints its URL once listening
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"fake upstream did not start (got {line!r})")
        self.url = line
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, grace=2)
            self.proc = None


@contextlib.contextmanager
def cli_environment(upstream_url: str) -> Iterator[Path]:
    """Point every CLI (ours and the proxy's) at the fake upstream, as tests/conftest.py does."""
    saved = dict(os.environ)
    config_dir = Path(tempfile.mkdtemp(prefix="bench-claude-config-"))
    for key in list(os.environ):
        if key.startswith(_SCRUB):
            del os.environ[key]
    os.environ.update({
        "ANTHROPIC_BASE_URL": upstream_url,
        "ANTHROPIC_API_KEY": FAKE_KEY,
        "CLAUDE_CONFIG_DIR": str(config_dir),
    })
    try:
        yield config_dir
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _rmtree(config_dir)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _threads_cpu(pid: int) -> float | None:
    """CPU-seconds of a live process's threads, to the nanosecond (Linux schedstat), or None.

    psutil's CPU times tick at 10 ms, coarser than a reused CLI's whole turn; the
    scheduler's per-thread counters are exact.  Threads that already ended are not in it
    (the CLIs' and the proxy's threads live as long as their process)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as stat:
                total += int(stat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread just ended
    return total / 1e9


def own_cpu(proc: psutil.Process) -> float:
    """CPU-seconds of the process itself (its threads), no children."""
    precise = _threads_cpu(proc.pid)
    if precise is not None:
        return precise
    try:
        times = proc.cpu_times()
        return times.user + times.system
    except psutil.Error:
        return 0.0


def tree_cpu(proc: psutil.Process) -> float:
    """CPU-seconds of ``proc``, its reaped children (cutime/cstime, 10 ms ticks) and its
    live descendants."""
    try:
        times = proc.cpu_times()
        total = own_cpu(proc) + times.children_user + times.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += own_cpu(child)
        return total
    except psutil.Error:
        return 0.0


def tree_rss(proc: psutil.Process) -> tuple[int, int, int]:
    """(RSS of the process, RSS summed over it and its live descendants, live descendants)."""
    try:
        own = proc.memory_info().rss
    except psutil.Error:
        return 0, 0, 0
    total = own
    children = proc.children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return own, total, len(children)


def cli_children(proc: psutil.Process) -> list[psutil.Process]:
    """The proxy's live Claude Code CLI processes (its direct children)."""
    try:
        return proc.children(recursive=False)
    except psutil.Error:
        return []


def wait_settled(proc: psutil.Process, *, want_children: int, timeout: float, quiet_ms: float = 4.0) -> bool:
    """Wait until ``proc`` has at least ``want_children`` live children and the tree is idle.

    Idle = the whole tree used under ``quiet_ms`` CPU-ms over a 100 ms window: a pre-started
    CLI has finished initialising and waits for its request.  Returns whether it got there.
    """
    deadline = time.monotonic() + timeout
    before = tree_cpu(proc)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = tree_cpu(proc)
        busy_ms = (now - before) * 1000
        before = now
        if len(cli_children(proc)) >= want_children and busy_ms < quiet_ms:
            return True
    return False


@dataclass
class RssSampler:
    """Samples the proxy tree's RSS every ``interval`` s in a thread; keeps the peak."""

    proc: psutil.Process
    interval: float = 0.1
    peak_total: int = 0
    peak_own: int = 0
    peak_children: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            own, total, children = tree_rss(self.proc)
            self.peak_own = max(self.peak_own, own)
            self.peak_total = max(self.peak_total, total)
            self.peak_children = max(self.peak_children, children)
            self._stop.wait(self.interval)


class ProxyProcess:
    """``python -m claude_code_proxy serve`` as a real uvicorn subprocess on loopback."""

    def __init__(self, *, pool_size: int | None, label: str, extra_env: dict[str, str] | None = None) -> None:
        self.pool_size = pool_size
        self.label = label
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-proxy-{label}-"))
        self.log_path = self.workdir / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        env = dict(os.environ)  # already pointed at the fake upstream by cli_environment()
        env.update({
            "CLAUDE_PROXY_USAGE_DB": str(self.workdir / "usage.db"),  # the real ledger, in a temp dir
            "CLAUDE_PROXY_CLI_MAX_RETRIES": "0",
            "CLAUDE_PROXY_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        })
        if self.pool_size is not None:
            env["CLAUDE_PROXY_WARM_POOL_SIZE"] = str(self.pool_size)
        env.update(self.extra_env)
        with self.log_path.open("wb") as log:
            # cwd is an empty temp dir so no developer .env is picked up.
            self.proc = subprocess.Popen(
                self.command(), cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited at start-up:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"proxy did not answer /health/live in {timeout:g} s:\n{self.log_tail()}")

    def command(self) -> list[str]:
        """The server's command line (a subclass may start a variant of the server)."""
        return [sys.executable, "-m", "claude_code_proxy", "serve", "--host", "127.0.0.1", "--port", str(self.port)]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, grace=15)
            self.proc = None  # stop() is idempotent: never signal a reused pid
        _rmtree(self.workdir)
