"""What the proxy removes after a killed CLI: that process's own leftovers, never anything else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from claude_code_proxy.backend.footprint import ConfigPlaces, config_places, forget_leftovers


def gone_pid() -> int:
    """The pid of a process that ran and was reaped (as a killed CLI is when this runs)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def record(pid: int, **fields: object) -> str:
    return json.dumps({"pid": pid, "sessionId": "s", "cwd": "/", "entrypoint": "sdk-py", "status": "busy",
                       **fields})


@pytest.fixture()
def places(tmp_path: Path) -> ConfigPlaces:
    config, home = tmp_path / "config", tmp_path / "home"
    (config / "sessions").mkdir(parents=True)
    home.mkdir()
    return ConfigPlaces(config, home)


def files(places: ConfigPlaces) -> set[str]:
    root = places.config_dir.parent
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_killed_clis_record_and_pid_tagged_temp_files_are_removed(places: ConfigPlaces) -> None:
    pid = gone_pid()
    config, home = places.config_dir, places.home
    assert home is not None
    (config / "sessions" / f"{pid}.json").write_text(record(pid))
    for name in (f".claude.json.tmp.{pid}.3fa9c1", f".credentials.json.tmp.{pid}.0b7d",
                 f"sessions/{pid}.json.tmp.{pid}.77aa"):
        (config / name).write_text("{")
    (home / f".claude.json.tmp.{pid}.1c2d").write_text("{")
    kept = {"config/.claude.json", "config/.credentials.json", "home/.claude.json"}
    for name in kept:
        (places.config_dir.parent / name).write_text("{}")

    removed = forget_leftovers(places, pid)

    assert len(removed) == 5, removed
    assert files(places) == kept


@pytest.mark.parametrize("content", [
    pytest.param(record(0, cwd="/home/someone/project"), id="another working directory: the user's session"),
    pytest.param(record(0, entrypoint="cli"), id="started from a terminal: the user's session"),
    pytest.param(record(0, entrypoint=None), id="no entrypoint"),
    pytest.param(record(1), id="names another pid"),
    pytest.param('{"pid": 0, "cwd": "/", "entrypoint": "sdk-py"', id="not JSON"),
    pytest.param("[]", id="not an object"),
])
def test_a_record_that_is_not_this_sdk_cli_in_the_neutral_directory_stays(places: ConfigPlaces, content: str) -> None:
    pid = gone_pid()
    path = places.config_dir / "sessions" / f"{pid}.json"
    path.write_text(content.replace('"pid": 0', f'"pid": {pid}'))
    assert forget_leftovers(places, pid) == []
    assert path.exists()


def test_another_pids_files_stay(places: ConfigPlaces) -> None:
    pid = gone_pid()
    other = pid + 1
    config = places.config_dir
    names = [f"sessions/{other}.json", f".claude.json.tmp.{other}.aa11", f".claude.json.tmp.{pid}0.bb22",
             f".claude.json.tmp.{pid}", f"backups/.claude.json.tmp.{pid}.cc33"]
    (config / "backups").mkdir()
    (config / "sessions" / f"{other}.json").write_text(record(other))
    for name in names[1:]:
        (config / name).write_text("{")
    assert forget_leftovers(places, pid) == []
    assert files(places) == {f"config/{name}" for name in names}


def test_nothing_is_touched_while_a_process_of_that_pid_runs(places: ConfigPlaces) -> None:
    """A reaped CLI's pid may already belong to a new process: the files are the new one's."""
    pid = os.getpid()
    (places.config_dir / "sessions" / f"{pid}.json").write_text(record(pid))
    (places.config_dir / f".claude.json.tmp.{pid}.dd44").write_text("{")
    assert forget_leftovers(places, pid) == []
    assert len(files(places)) == 2


def test_the_places_follow_the_clis_own_rule() -> None:
    assert config_places({"CLAUDE_CONFIG_DIR": "/srv/claude", "HOME": "/home/a"}) == \
        ConfigPlaces(Path("/srv/claude"), Path("/home/a"))
    assert config_places({"HOME": "/home/a"}) == ConfigPlaces(Path("/home/a/.claude"), Path("/home/a"))
    assert config_places({"CLAUDE_CONFIG_DIR": "", "HOME": "/home/a"}) == \
        ConfigPlaces(Path("/home/a/.claude"), Path("/home/a"))
    assert forget_leftovers(None, gone_pid()) == []
