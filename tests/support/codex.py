"""OpenAI's Codex CLI (``codex exec``) against a running proxy, the way a user configures it.

The binary comes from npm via scripts/install-test-tools.sh (into .cache/test-tools).
Each run gets its own CODEX_HOME holding the README's ``config.toml`` (a provider with an
``env_key``, so no login), with Codex's own network features off; every other outbound
connection it might still try goes to a local proxy that refuses it, so nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CODEX = REPO / ".cache" / "test-tools" / "node_modules" / ".bin" / "codex"
MODEL = "gpt-5.5"
"""A model Codex ships a profile for: its tools then include the free-form apply_patch."""
KEY_VARIABLE = "CLAUDE_CODE_PROXY_KEY"


def codex_binary() -> str | None:
    found = CODEX if CODEX.exists() else shutil.which("codex")
    return str(found) if found else None


def config_toml(base_url: str) -> str:
    return f"""model = "{MODEL}"
model_provider = "claude-code-proxy"
check_for_update_on_startup = false

[model_providers.claude-code-proxy]
name = "claude-code-proxy"
base_url = "{base_url}"
env_key = "{KEY_VARIABLE}"
wire_api = "responses"

[analytics]
enabled = false

[feedback]
enabled = false

[history]
persistence = "none"

[features]
plugins = false
remote_plugin = false
apps = false
"""


@contextmanager
def refusing_proxy() -> Iterator[str]:
    """An HTTP proxy on 127.0.0.1 that closes every connection at once."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def refuse() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


@dataclass
class CodexRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [e["item"] for e in self.events if e.get("type") == "item.completed" and e["item"]["type"] == kind]


def codex_exec(binary: str, proxy_url: str, home: Path, workdir: Path, prompt: str, timeout: float = 180) -> CodexRun:
    """``codex exec --json`` in ``workdir`` (sandboxed to it), against the proxy at ``proxy_url``."""
    home.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config_toml(f"{proxy_url}/openai/v1"), encoding="utf-8")
    with refusing_proxy() as outbound:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "CODEX_HOME": str(home),
            KEY_VARIABLE: "anything",
            "HTTPS_PROXY": outbound, "HTTP_PROXY": outbound, "ALL_PROXY": outbound,
            "https_proxy": outbound, "http_proxy": outbound, "all_proxy": outbound,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        }
        done = subprocess.run(
            [binary, "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write", "-C", str(workdir),
             prompt],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
        )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return CodexRun(done.returncode, events, done.stderr)
