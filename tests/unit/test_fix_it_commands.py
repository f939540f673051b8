"""Every command the docs and the fix-it messages tell a user to run exists after an install.

The Claude Code CLI the proxy runs is bundled inside the virtual environment, not on PATH,
so no text may say "run `claude ...`": it names `claude-code-proxy login`, `setup-token` or
`claude ...` instead. And every `claude-code-proxy WORD` (or `docker compose run ... proxy
WORD`) named anywhere is a real subcommand.
"""

from __future__ import annotations

import re
from pathlib import Path

from claude_code_proxy.backend.options import LOGIN_HELP
from claude_code_proxy.cli import build_parser
from claude_code_proxy.ops.doctor import LOGIN_FIX

ROOT = Path(__file__).resolve().parents[2]
TEXTS = sorted(
    [ROOT / "README.md", ROOT / ".env.example", ROOT / "docker-compose.yml", ROOT / "Dockerfile", ROOT / "Makefile",
     *(ROOT / "docs").glob("*.md"), *(ROOT / "claude_code_proxy").rglob("*.py")]
)
# A bare `claude` command, or the CLI's interactive /login, offered as something to run.
STALE = re.compile(r"`claude (?!-)[^`]*`|[Rr]un `claude`|use `?/login")
SPAN = re.compile(r"`([^`\n]+)`")
# (Not a compose project name: `podman-compose -p claude-code-proxy up`.)
PROXY_COMMAND = re.compile(
    r"(?<!-p)(?<!-name)(?:^|[\s/])claude-code-proxy ([a-z][a-z-]*)|docker compose run (?:--rm )?proxy ([a-z][a-z-]*)"
)


def subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(action.choices, dict)
    return set(action.choices)


def test_no_text_tells_a_user_to_run_the_bare_cli() -> None:
    found = [f"{path.relative_to(ROOT)}: {match.group(0)}"
             for path in TEXTS for match in STALE.finditer(path.read_text(encoding="utf-8"))]
    assert found == []


def test_the_guard_catches_the_old_wording() -> None:
    old = "Run `claude` and use /login, or set CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`)"
    assert len(STALE.findall(old)) == 3


def test_every_named_command_exists() -> None:
    known = subcommands()
    assert {"serve", "login", "setup-token", "claude", "doctor", "usage"} <= known
    named: dict[str, set[str]] = {}
    for path in TEXTS:
        text = path.read_text(encoding="utf-8")
        # Inline code spans, and every line of fenced blocks (commands a reader copies).
        spans = SPAN.findall(text) + [line for block in re.findall(r"```\w*\n(.*?)```", text, re.S)
                                      for line in block.splitlines()]
        for span in spans:
            for match in PROXY_COMMAND.finditer(span):
                named.setdefault(match.group(1) or match.group(2), set()).add(str(path.relative_to(ROOT)))
    assert {"login", "setup-token", "doctor", "serve"} <= set(named), named
    unknown = {word: where for word, where in named.items() if word not in known}
    assert unknown == {}


def test_the_login_messages_name_the_commands_that_work() -> None:
    for message in (LOGIN_HELP, LOGIN_FIX):
        assert "`claude-code-proxy login`" in message
        assert "`claude-code-proxy setup-token`" in message
        assert "ANTHROPIC_API_KEY" in message
    assert "docker compose run --rm proxy setup-token" in LOGIN_FIX
