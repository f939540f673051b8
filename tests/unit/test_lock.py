"""The dependency locks in requirements/: exact, hashed, consistent with pyproject.toml, and
what is installed.

``make install`` (and ``make run``, and the Docker image) install requirements/runtime.txt with
``pip --require-hashes``; ``make test`` installs requirements/dev.txt, the same runtime pins plus
the dev tools. CI runs ``make install`` and ``make test`` on a clean clone, so the installed-
versions test below checks that a fresh install really got the locked versions, the bundled
Claude Code CLI included.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: frozenset[str]

    @property
    def version(self) -> Version:
        (spec,) = self.requirement.specifier
        return Version(spec.version)

    @property
    def applies_here(self) -> bool:
        return self.requirement.marker is None or self.requirement.marker.evaluate()


def read_lock(path: Path) -> dict[str, Pin]:
    """name -> Pin for a hashed requirements file (``name==version ; marker \\`` + hash lines)."""
    pins: dict[str, Pin] = {}
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    entries = re.split(r"\n(?=\S)", "\n".join(line for line in lines if line.strip()))
    for entry in entries:
        head, *options = [part.strip() for part in entry.replace("\\\n", "\n").splitlines()]
        requirement = Requirement(head.rstrip("\\ "))
        hashes = frozenset(opt.removeprefix("--hash=") for opt in options if opt.startswith("--hash=sha256:"))
        assert len(options) == len(hashes), f"{path.name}: unexpected options in {head!r}: {options}"
        pins[canonicalize_name(requirement.name)] = Pin(requirement, hashes)
    return pins


@pytest.fixture(scope="module")
def runtime() -> dict[str, Pin]:
    return read_lock(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def dev() -> dict[str, Pin]:
    return read_lock(DEV_LOCK)


def test_every_entry_is_exact_and_hashed(runtime: dict[str, Pin], dev: dict[str, Pin]) -> None:
    for lock in (runtime, dev):
        assert lock, "empty lock"
        for name, pin in lock.items():
            specs = list(pin.requirement.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{name} is not pinned exactly"
            assert pin.hashes, f"{name} has no hash: pip --require-hashes would refuse the lock"


def test_the_parser_reads_what_pip_reads(runtime: dict[str, Pin]) -> None:
    """Guard the parser: it finds the SDK with all its wheels' hashes, and no stray text."""
    sdk = runtime["claude-agent-sdk"]
    assert len(sdk.hashes) >= 2  # a platform wheel each: the lock is for every platform
    assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for pin in runtime.values() for h in pin.hashes)


def test_the_dev_lock_has_the_runtime_pins(runtime: dict[str, Pin], dev: dict[str, Pin]) -> None:
    """`make test` tests exactly what `make run` and the image install."""
    for name, pin in runtime.items():
        assert name in dev, f"{name} is in the runtime lock only"
        assert dev[name].version == pin.version, f"{name}: {dev[name].version} (dev) != {pin.version} (runtime)"
        assert dev[name].hashes == pin.hashes, f"{name}: the two locks trust different files"


def test_the_locks_satisfy_pyproject(runtime: dict[str, Pin], dev: dict[str, Pin]) -> None:
    """An edit to pyproject.toml's dependencies needs `make lock`: say so when it was forgotten."""
    wanted = [(runtime, PYPROJECT["project"]["dependencies"]),
              (dev, PYPROJECT["project"]["optional-dependencies"]["dev"])]
    for lock, dependencies in wanted:
        for text in dependencies:
            requirement = Requirement(text)
            pin = lock.get(canonicalize_name(requirement.name))
            assert pin is not None, f"{requirement.name} is not in the lock: run `make lock`"
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{requirement.name}=={pin.version} is outside {requirement.specifier}: run `make lock`"
            )


def test_the_locks_name_no_machine(runtime: dict[str, Pin]) -> None:
    for path in (RUNTIME_LOCK, DEV_LOCK):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"--(extra-)?index-url|--find-links|file:|https?://|/tmp/", text), path.name
        assert "make lock" in text.splitlines()[1], "the header names the command that regenerates it"


def test_installed_versions_are_the_locked_ones(dev: dict[str, Pin]) -> None:
    """What this environment runs on is the lock: catches an install that bypassed it."""
    wrong = []
    for name, pin in dev.items():
        if not pin.applies_here:
            continue
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed (locked {pin.version})")
            continue
        if installed != pin.version:
            wrong.append(f"{name}: {installed} installed, {pin.version} locked")
    assert not wrong, "this environment is not the lock (run `make install-dev`):\n" + "\n".join(wrong)


def test_the_bundled_cli_is_the_one_the_locked_sdk_ships(runtime: dict[str, Pin]) -> None:
    from claude_agent_sdk._cli_version import __cli_version__

    from claude_code_proxy.config.settings import find_cli

    assert Version(importlib.metadata.version("claude-agent-sdk")) == runtime["claude-agent-sdk"].version
    cli = find_cli()
    assert cli is not None and "_bundled" in cli, cli
    out = subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split()[0] == __cli_version__, (out, __cli_version__)


def _dry_run(*targets: str, venv: Path) -> list[str]:
    """The commands `make` would run for ``targets`` in a fresh clone (nothing is run)."""
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", f"VENV={venv}", f"PYTHON={sys.executable}", *targets],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def _pip_installs(commands: list[str]) -> list[str]:
    return [cmd.split(" install ", 1)[1] for cmd in commands if " -m pip " in cmd and " install " in cmd]


def test_make_run_installs_only_the_runtime_lock_with_hashes(tmp_path: Path) -> None:
    installs = _pip_installs(_dry_run("run", venv=tmp_path / "venv"))
    assert installs == ["--quiet --require-hashes -r requirements/runtime.txt", "--quiet --no-deps -e ."]


def test_make_test_installs_the_dev_lock_with_hashes(tmp_path: Path) -> None:
    installs = _pip_installs(_dry_run("test", venv=tmp_path / "venv"))
    assert installs == ["--quiet --require-hashes -r requirements/dev.txt", "--quiet --no-deps -e ."]


def test_upgrade_lock_re_resolves_both_locks_then_runs_the_suite(tmp_path: Path) -> None:
    commands = _dry_run("upgrade-lock", venv=tmp_path / "venv")
    compiles = [c for c in commands if " pip compile " in c]
    assert len(compiles) == 2 and all("--upgrade" in c and "--generate-hashes" in c for c in compiles)
    assert compiles[0].endswith("-o requirements/runtime.txt pyproject.toml")
    assert "--extra dev -c requirements/runtime.txt -o requirements/dev.txt" in compiles[1]
    # Then `make test` (dry-run shows the recursive make's commands): the new dev lock, then the suite.
    after = commands[commands.index(compiles[1]) + 1:]
    assert any("--require-hashes -r requirements/dev.txt" in c for c in after)
    assert any(c.endswith(" -m pytest") for c in after)
