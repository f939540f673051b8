"""Helpers to observe the CLI processes and temp directories a server leaves behind.

The bundled CLI's main thread can exit while its worker threads keep running: Linux
then shows the process as a zombie leader (``Zl``) although it is still alive.  So a
process counts as alive while any thread of it runs, and its cwd and environment are
read through one of those threads.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        return "X"
    return "X"


def _live_task(pid: int) -> str | None:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        if _state_of_task(pid, tid) != "Z":
            return tid
    return None


def _state_of_task(pid: int, tid: str) -> str:
    try:
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except OSError:
        return "X"
    return "X"


def cli_processes() -> list[int]:
    """PIDs of live Claude Code CLI processes started by this test process."""
    found = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            name = child.name()
        except psutil.Error:
            continue
        if name == "claude" and _live_task(child.pid) is not None:
            found.append(child.pid)
    return found


def environ(pid: int) -> dict[str, str]:
    tid = _live_task(pid)
    raw = Path(f"/proc/{tid}/environ").read_bytes()
    pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item]
    return {k.decode(): v.decode("utf-8", "replace") for k, v in pairs}


def cwd(pid: int) -> str:
    tid = _live_task(pid)
    return os.readlink(f"/proc/{tid}/cwd")


def zombies() -> list[int]:
    """Dead children nobody reaped (a zombie leader with live threads is not one)."""
    out = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        if _state(child.pid) == "Z" and _live_task(child.pid) is None:
            out.append(child.pid)
    return out


def request_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("claude-proxy-*")}


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
