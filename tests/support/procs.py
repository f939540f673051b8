"""Helpers to observe the CLI processes and temp directories a server leaves behind.

The bundled CLI's main thread can exit while its worker threads keep running: Linux
then shows the process as a zombie leader (``Zl``) although it is still alive.  So a
process counts as alive while any thread of it runs.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


def _state(path: str) -> str:
    """The one-letter state in a /proc ``status`` file ("X" when it is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        return "X"
    return "X"


def is_alive(pid: int) -> bool:
    """Any thread of ``pid`` still runs (not dead, not a zombie)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(_state(f"/proc/{pid}/task/{tid}/status") not in ("Z", "X") for tid in tasks)


def live_cli_pids(root: int) -> list[int]:
    """Live ``claude`` processes below ``root``."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            name = child.name()
        except psutil.Error:
            continue
        if name == "claude" and is_alive(child.pid):
            found.append(child.pid)
    return found


def cli_processes() -> list[int]:
    """PIDs of live Claude Code CLI processes started by this test process."""
    return live_cli_pids(os.getpid())


def zombies() -> list[int]:
    """Dead children nobody reaped (a zombie leader with live threads is not one)."""
    return [
        child.pid for child in psutil.Process(os.getpid()).children(recursive=True)
        if _state(f"/proc/{child.pid}/status") == "Z" and not is_alive(child.pid)
    ]


def request_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("claude-proxy-*")}


SETTLE = 30.0
"""How long a test waits for what must follow soon (a CLI reaped, a directory removed, a gauge
back to 0).  Only a hang reaches it, never a busy machine; a wait that holds returns at once."""


def wait_until(predicate: Callable[[], object], timeout: float = SETTLE, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (its last answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@contextmanager
def peak_of(measure: Callable[[], int], interval: float = 0.01) -> Iterator[list[int]]:
    """Sample ``measure()`` every ``interval`` seconds while the block runs; yields [peak],
    updated live."""
    peak = [measure()]
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], measure())
            stop.wait(interval)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join(timeout=5)
