"""What a CLI process leaves in the user's Claude configuration directory, and removing it.

While it runs, every CLI keeps a session record, ``<config>/sessions/<pid>.json`` (config:
``CLAUDE_CONFIG_DIR``, else ``~/.claude``: the login's home, the CLI inherits both from the
proxy), and it writes its configuration files (``.claude.json``, ``.credentials.json``)
through temp files named ``<file>.tmp.<pid>.<random>``.  A CLI that exits by itself (its
input closed) removes its record and completes its writes; a killed one leaves them
behind.  With a real login that directory is the user's own, and a left record shows up in
their Claude Code session list.  So an idle CLI is left to exit by itself (backend/process.py),
and once a killed one is reaped, ``forget_leftovers`` removes what that process left.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from claude_code_proxy.backend.options import NEUTRAL_CWD


@dataclass(frozen=True)
class ConfigPlaces:
    """Where a CLI keeps its state: its configuration directory, and the home directory
    (``.claude.json`` lives there when ``CLAUDE_CONFIG_DIR`` is unset)."""

    config_dir: Path
    home: Path | None


def config_places(environ: Mapping[str, str]) -> ConfigPlaces | None:
    """The CLI's own rule, read from the environment it inherits (None: no home, no state)."""
    home: Path | None = Path(environ["HOME"]) if environ.get("HOME") else None
    if home is None:
        with suppress(RuntimeError, KeyError):  # no HOME: the password database's entry
            home = Path.home()
    configured = environ.get("CLAUDE_CONFIG_DIR")
    if configured:
        return ConfigPlaces(Path(configured), home)
    return ConfigPlaces(home / ".claude", home) if home is not None else None


def forget_leftovers(places: ConfigPlaces | None, pid: int) -> list[Path]:
    """Remove what the reaped CLI process ``pid`` left; returns the paths removed.

    Only files that name this process are touched, never one of the user's own sessions:
    a session record of this pid started by the SDK in the proxy's working directory, and
    temp files the CLI tagged with this pid.  Nothing is touched while a process of that
    pid runs: the pid was reused, and the files are the new process's.
    """
    if places is None or _running(pid):
        return []
    config = places.config_dir
    targets = [path for path in [config / "sessions" / f"{pid}.json"] if _our_record(path, pid)]
    for folder in (config, config / "sessions"):
        targets += folder.glob(f"*.tmp.{pid}.*")
    if places.home is not None:
        targets += places.home.glob(f".claude.json.tmp.{pid}.*")
    removed = []
    for path in targets:
        with suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _our_record(path: Path, pid: int) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and data.get("pid") == pid and data.get("cwd") == NEUTRAL_CWD
            and str(data.get("entrypoint", "")).startswith("sdk"))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): it exists
        return True
    return True
