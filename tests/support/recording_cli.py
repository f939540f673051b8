"""A stand-in ``claude`` that records its argv and environment, then runs the real CLI.

The bundled CLI hides its own argv and environment from /proc once it is running, so
tests that must see exactly what the proxy handed the CLI put this wrapper in front.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from claude_code_proxy.config.settings import find_cli


@dataclass
class Spawn:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    settings: str | None = None
    """The text of the file given with ``--settings`` (copied at spawn: it is removed after)."""


@dataclass
class RecordingCli:
    path: Path
    records: Path

    def spawns(self) -> list[Spawn]:
        """Every run with a chat session (``--output-format``), oldest first."""
        out = []
        for argv_file in sorted(self.records.glob("*.argv"), key=lambda p: p.stat().st_mtime_ns):
            argv = argv_file.read_bytes().split(b"\0")[:-1]
            env_raw = argv_file.with_suffix(".env").read_bytes().split(b"\0")
            env = dict(item.decode().split("=", 1) for item in env_raw if b"=" in item)
            cwd = argv_file.with_suffix(".cwd").read_text().strip()
            settings_file = argv_file.with_suffix(".settings")
            settings = settings_file.read_text() if settings_file.exists() else None
            decoded = [a.decode() for a in argv]
            if "--output-format" in decoded:
                out.append(Spawn(decoded, env, cwd, settings))
        return out

    def clear(self) -> None:
        for path in self.records.iterdir():
            path.unlink()


def make_recording_cli(directory: Path) -> RecordingCli:
    real = find_cli()
    assert real, "the bundled CLI is missing"
    records = directory / "records"
    records.mkdir(parents=True, exist_ok=True)
    script = directory / "claude"
    rec = shlex.quote(str(records))
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(date +%s%N)-$$\n"
        f'printf "%s\\0" "$@" > {rec}/$n.argv.tmp\n'
        f"env -0 > {rec}/$n.env\n"
        f"pwd > {rec}/$n.cwd\n"
        'prev=""; for a in "$@"; do\n'
        f'  if [ "$prev" = --settings ]; then cp "$a" {rec}/$n.settings; fi; prev="$a"\n'
        "done\n"
        f"mv {rec}/$n.argv.tmp {rec}/$n.argv\n"
        f'exec {shlex.quote(real)} "$@"\n'
    )
    script.chmod(0o755)
    return RecordingCli(script, records)


__all__ = ["RecordingCli", "Spawn", "make_recording_cli"]
