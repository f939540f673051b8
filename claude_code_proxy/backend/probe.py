"""What the CLI says about itself: path, version and login state (for /health and doctor).

Each probe spawns the CLI twice (``--version``, ``auth status``, ~0.2 s each), so the
client caches the result.  The probe never calls the model.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import suppress

import anyio

from claude_code_proxy.backend.base import CliStatus
from claude_code_proxy.backend.options import child_env, cli_usable


async def probe_cli(path: str | None) -> CliStatus:
    if path is None or not cli_usable(path):
        return CliStatus(found=False, path=path, checked_at=time.monotonic())
    env = {**os.environ, **child_env(os.environ)}
    status = CliStatus(found=True, path=path, checked_at=time.monotonic())
    code, out = await _capture([path, "--version"], env)
    if code == 0:
        status.version = out.strip().split(" ", 1)[0]
    code, out = await _capture([path, "auth", "status"], env)
    with suppress(ValueError):
        info = json.loads(out)
        status.logged_in = bool(info.get("loggedIn"))
        status.auth_method = info.get("authMethod")
        status.subscription_type = info.get("subscriptionType")
        status.api_key_source = info.get("apiKeySource")
    return status


async def _capture(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a short CLI command with no stdin; (exit code, stdout) or (-1, "")."""
    try:
        with anyio.fail_after(15):
            result = await anyio.run_process(argv, env=env, check=False, stdin=None, cwd=tempfile.gettempdir())
    except (OSError, TimeoutError):
        return -1, ""
    return result.returncode, result.stdout.decode("utf-8", "replace")
