"""``claude-code-proxy login``, ``setup-token`` and ``claude ...`` drive the real bundled CLI.

Each sign-in test runs the command as a user would, waits until the CLI shows its own sign-in
URL (no network: any outside connection would go to a closed port on 127.0.0.1, and the
"browser" is ``true``), checks where the CLI keeps its state, and kills it: nothing waits
for a person. The Docker Compose flow (``docker compose run --rm proxy setup-token``) is
run as the image would run it, from the Dockerfile's ENTRYPOINT and ENV and the compose
file's environment (no Docker engine here).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from claude_code_proxy.config.settings import find_cli
from tests.conftest import make_settings
from tests.integration.test_docker import COMPOSE, DOCKERFILE, env_of, exec_form, stages
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import serve

REPO = Path(__file__).resolve().parents[2]
SIGN_IN_URL = re.compile(r"https://\S+/oauth/authorize\?\S+")
# `auth login` on pipes: the URL, then the prompt for the code (the flow waits there).
SIGN_IN_PROMPT = re.compile(SIGN_IN_URL.pattern + r".*Paste code here", re.S)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[78=>]")
CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens, so any outside request fails here


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no credentials, no display, a browser that does nothing."""
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "TERM": "xterm", "LANG": "C.UTF-8",
        "BROWSER": "true", "HTTPS_PROXY": CLOSED, "HTTP_PROXY": CLOSED, "https_proxy": CLOSED,
        "http_proxy": CLOSED, "NO_PROXY": "", "no_proxy": "",
        "PYTHONPATH": str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
    }
    env.update(extra)
    home.mkdir(parents=True, exist_ok=True)
    return env


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    output: str


@contextmanager
def run_until(argv: list[str], env: dict[str, str], cwd: Path, pattern: re.Pattern[str], *,
              terminal: bool, timeout: float = 90.0) -> Iterator[Started]:
    """Start ``argv`` (on a pseudo-terminal, or on pipes with stdin held open), read its output
    until ``pattern`` shows, hand it over, then kill its whole process group."""
    if terminal:
        controller, tty = pty.openpty()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=tty, stdout=tty, stderr=tty, start_new_session=True)
        os.close(tty)
        source = controller
    else:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdout is not None
        source = proc.stdout.fileno()
    raw = b""
    try:
        deadline = time.monotonic() + timeout  # a safety net for a broken CLI, not a margin
        while not pattern.search(ANSI.sub("", raw.decode("utf-8", "replace"))):
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern.pattern!r} within {timeout} s; output:\n{raw.decode(errors='replace')}")
            ready, _, _ = select.select([source], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(source, 65536)
            except OSError:  # the terminal closed: the process ended
                chunk = b""
            if not chunk:
                proc.wait(timeout=30)
                output = raw.decode(errors="replace")
                pytest.fail(f"exited with {proc.returncode} before {pattern.pattern!r}:\n{output}")
            raw += chunk
        yield Started(proc, ANSI.sub("", raw.decode("utf-8", "replace")))
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if terminal:
            os.close(controller)
        elif proc.stdout is not None:
            proc.stdout.close()
            if proc.stdin is not None:
                proc.stdin.close()


def proxy_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "claude_code_proxy", *args]


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait on a condition (a safety-net deadline, not a margin)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def assert_is_the_bundled_cli(pid: int) -> None:
    """The command exec'd the proxy's CLI: same process, now the bundled binary."""
    bundled = find_cli()
    assert bundled is not None and "_bundled" in bundled
    assert os.path.realpath(psutil.Process(pid).exe()) == os.path.realpath(bundled)


def test_login_starts_the_clis_sign_in_in_the_proxys_config_dir(tmp_path: Path) -> None:
    config = tmp_path / "config"
    env = base_env(tmp_path / "home", CLAUDE_CONFIG_DIR=str(config))
    # The CLI's own flow: its sign-in page and its code prompt, for a subscription by default.
    with run_until(proxy_command("login"), env, tmp_path, SIGN_IN_PROMPT, terminal=False) as started:
        assert_is_the_bundled_cli(started.proc.pid)
        assert f"The login is kept in {config}, where the proxy reads it" in started.output
        assert "claude-code-proxy doctor" in started.output
        # It keeps its state in the config dir given, and nowhere in HOME.
        eventually((config / ".claude.json").is_file, f"the CLI writes {config}/.claude.json")
    assert list((tmp_path / "home").iterdir()) == []


def test_login_passes_its_options_to_the_cli(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home", CLAUDE_CONFIG_DIR=str(tmp_path / "config"))
    argv = proxy_command("login", "--console", "--email", "someone@example.com")
    with run_until(argv, env, tmp_path, SIGN_IN_URL, terminal=False) as started:
        assert_is_the_bundled_cli(started.proc.pid)
        cmdline = psutil.Process(started.proc.pid).cmdline()
    assert cmdline[1:] == ["auth", "login", "--console", "--email", "someone@example.com"]


def test_setup_token_starts_the_clis_token_flow(tmp_path: Path) -> None:
    config = tmp_path / "config"
    env = base_env(tmp_path / "home", CLAUDE_CONFIG_DIR=str(config))
    with run_until(proxy_command("setup-token"), env, tmp_path, SIGN_IN_URL, terminal=True) as started:
        assert_is_the_bundled_cli(started.proc.pid)
        assert "long-lived" in started.output  # the CLI's own token screen
        assert "CLAUDE_CODE_OAUTH_TOKEN=<the token>" in started.output
        eventually((config / ".claude.json").is_file, f"the CLI writes {config}/.claude.json")


@pytest.mark.parametrize("configured", [True, False], ids=["CLAUDE_CONFIG_DIR", "default"])
def test_the_config_dir_is_the_one_the_cli_uses(tmp_path: Path, configured: bool) -> None:
    """What `login` announces is where the CLI, as the proxy runs it, keeps its login."""
    home = tmp_path / "home"
    extra = {"CLAUDE_CONFIG_DIR": str(tmp_path / "config")} if configured else {}
    env = base_env(home, **extra)
    expected = str(tmp_path / "config") if configured else str(home / ".claude")
    result = subprocess.run(proxy_command("claude", "auth", "status"), env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    status = json.loads(result.stdout)
    assert status["configDirectory"] == expected
    assert status["loggedIn"] is False and result.returncode == 1  # the CLI's exit code comes through
    from claude_code_proxy.ops.login_cli import config_dir

    assert config_dir(env) == expected


def test_claude_passes_every_argument_through(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home", CLAUDE_CONFIG_DIR=str(tmp_path / "config"))
    bundled = find_cli()
    assert bundled is not None
    expected = subprocess.run([bundled, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    for argv in (proxy_command("claude", "--version"), proxy_command("claude", "-v")):
        result = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0 and result.stdout == expected, result.stderr
    # --help after `claude` is the CLI's help, not the proxy's.
    result = subprocess.run(proxy_command("claude", "--help"), env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)
    assert "Claude Code" in result.stdout and "claude-code-proxy" not in result.stdout


def test_a_missing_cli_is_a_clear_error(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home", CLAUDE_PROXY_CLI_PATH=str(tmp_path / "nonexistent"))
    for command in ("login", "setup-token", "claude"):
        result = subprocess.run(proxy_command(command), env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert result.returncode == 1
        assert "Claude Code CLI was not found" in result.stderr and "CLAUDE_PROXY_CLI_PATH" in result.stderr
        assert "Traceback" not in result.stderr


def test_docker_compose_run_setup_token(tmp_path: Path) -> None:
    """`docker compose run --rm proxy setup-token`, as the container runs it."""
    final = stages(DOCKERFILE.read_text(encoding="utf-8"))[-1]
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1])
    assert entrypoint[:2] == ["/usr/bin/tini", "--"] and entrypoint[2:] == ["python", "-m", "claude_code_proxy"]
    service = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["proxy"]
    assert "entrypoint" not in service  # `compose run proxy ARGS` replaces only CMD

    # The container's environment: the image's ENV, then the compose file's (its API key from .env),
    # with the tmpfs paths (HOME, CLAUDE_CONFIG_DIR) mapped into this test's directory.
    env = {k: v.replace("$PATH", os.environ["PATH"]) for k, v in env_of(final).items()}
    for name, value in service["environment"].items():
        env[name] = "k" * 40 if name == "CLAUDE_PROXY_API_KEY" else str(value)
    home = tmp_path / env["HOME"].lstrip("/")
    config = tmp_path / env["CLAUDE_CONFIG_DIR"].lstrip("/")
    assert config.is_relative_to(home)  # one of the compose file's tmpfs mounts
    env.update(HOME=str(home), CLAUDE_CONFIG_DIR=str(config), CLAUDE_PROXY_USAGE_DB="")
    env = base_env(home, **env)
    config.mkdir(parents=True)

    argv = [sys.executable, *entrypoint[3:], "setup-token"]
    with run_until(argv, env, home, SIGN_IN_URL, terminal=True) as started:
        assert_is_the_bundled_cli(started.proc.pid)  # CLAUDE_PROXY_CLI_PATH="" means the bundled CLI
        assert "(with Docker Compose: in .env)" in started.output
        eventually((config / ".claude.json").is_file, f"the CLI writes {config}/.claude.json")


def test_a_request_without_login_names_the_command_that_logs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    import anthropic
    import openai

    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "never-logged-in"))
    with serve(make_settings()) as running:
        claude = anthropic.Anthropic(base_url=running.url, api_key="x", max_retries=0,
                                     _strict_response_validation=True)
        with pytest.raises(anthropic.APIStatusError) as caught:
            claude.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        gpt = openai.OpenAI(base_url=f"{running.url}/openai/v1", api_key="x", max_retries=0,
                            _strict_response_validation=True)
        with pytest.raises(openai.APIStatusError) as caught_openai:
            gpt.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    for error in (caught.value, caught_openai.value):
        assert error.status_code == 503
        message = json.dumps(error.body)
        assert "`claude-code-proxy login`" in message and "`claude-code-proxy setup-token`" in message
        assert "/login" not in message.replace("claude-code-proxy login", "")
    assert upstream.requests == []  # nothing left the machine
