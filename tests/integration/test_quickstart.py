"""The README's quick start, command by command, as a new user runs it.

The commands are read from the README itself: a new or changed command fails here until a
test runs it. `make run` runs for real with the port changed the way the README says
(`CLAUDE_PROXY_PORT=... make run`), in this test's own environment (its install step is
``make install``, which CI runs on a clean clone, and tests/unit/test_lock.py checks);
then the README's `curl` and `doctor` lines run against it, with its port; and a second
`make run` on the same port stops at once with a message naming the port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.support.proxy_process import free_port

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
VENV = Path(sys.prefix)

# Every command of the quick start, and what runs it.
COVERED = {
    "make run": "test_make_run_serves_and_the_readme_commands_work",
    "CLAUDE_PROXY_PORT=8001 make run": "test_make_run_serves_and_the_readme_commands_work",
    "curl -s localhost:8000/health": "test_make_run_serves_and_the_readme_commands_work",
    ".venv/bin/claude-code-proxy doctor": "test_make_run_serves_and_the_readme_commands_work",
    ".venv/bin/claude-code-proxy login": "tests/integration/test_login.py",
    "make test": "CI (.ci/run)",
    "make container-smoke": "CI (.ci/run)",
}


def quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("\n### ", 1)[0]


def quick_start_commands() -> set[str]:
    section = quick_start()
    commands = {line.split("#", 1)[0].strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
                for line in block.splitlines()}
    # Inline commands a reader types: `make ...` and `VAR=value make ...`.
    commands |= {span for span in re.findall(r"`([^`\n]+)`", section) if re.match(r"(\w+=\S+ )?make ", span)}
    return {c for c in commands if c}


def test_every_quick_start_command_is_run_by_a_test_or_ci() -> None:
    assert quick_start_commands() == set(COVERED)


def make_run(port: int, log: Path) -> subprocess.Popen[bytes]:
    """`CLAUDE_PROXY_PORT=<port> make run` in the repository, on this test's virtual environment."""
    stamp = VENV / ".installed-runtime"
    env = {**os.environ, "CLAUDE_PROXY_PORT": str(port), "CLAUDE_PROXY_USAGE_DB": "",
           "CLAUDE_PROXY_WARM_POOL_SIZE": "0", "PYTHONPATH": str(REPO)}
    with log.open("wb") as out:
        # -o: the install step is taken as done (this environment is the installed one).
        return subprocess.Popen(["make", "--no-print-directory", "-o", str(stamp), f"VENV={VENV}", "run"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


@contextmanager
def serving(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = make_run(port, log)
    try:
        deadline = time.monotonic() + 60  # a safety net: it is ready when /health/live answers
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`make run` exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"`make run` did not serve:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # make and the server: a clean drain
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def readme_command(command: str, port: int) -> list[str]:
    """A quick-start line as it would run here: the README's port and .venv made this test's."""
    assert command in COVERED
    words = command.replace("8000", str(port)).split()
    return [str(VENV / w.removeprefix(".venv/")) if w.startswith(".venv/") else w for w in words]


def test_make_run_serves_and_the_readme_commands_work(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    assert curl, "the quick start uses curl"
    port = free_port()
    log = tmp_path / "make-run.log"
    with serving(port, log):
        assert f"Listening on http://127.0.0.1:{port}" in log.read_text()

        health = subprocess.run(readme_command("curl -s localhost:8000/health", port), capture_output=True,
                                text=True, timeout=60, check=True, env={**os.environ, "NO_PROXY": "*"})
        body = json.loads(health.stdout)
        assert body["status"] == "ok" and body["cli"]["found"] is True  # the tests' CLI has a (fake) key

        env = {**os.environ, "CLAUDE_PROXY_PORT": str(port), "PYTHONPATH": str(REPO)}
        doctor = subprocess.run(readme_command(".venv/bin/claude-code-proxy doctor", port), capture_output=True,
                                text=True, timeout=120, check=False, env=env, cwd=tmp_path)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert f"127.0.0.1:{port} is in use by a running claude-code-proxy" in doctor.stdout
        assert "No problems found." in doctor.stdout

        # The same port again: a clear message naming it and the setting, at once.
        second_log = tmp_path / "second.log"
        second = make_run(port, second_log)
        assert second.wait(timeout=60) != 0
        text = second_log.read_text()
        assert f"port {port} is already in use" in text and f"CLAUDE_PROXY_PORT={port + 1}" in text
        assert "Traceback" not in text and "startup complete" not in text.lower()
