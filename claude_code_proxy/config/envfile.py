"""``.env.example`` and the settings table of docs/configuration.md, rendered from Settings.

``python -m claude_code_proxy.config.envfile`` rewrites both; a test fails when they drift.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from claude_code_proxy.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


def env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, in declaration order."""
    out = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        out.append((f"CLAUDE_PROXY_{name.upper()}", env_value(default), field.description or ""))
    return out


def render_env_example() -> str:
    lines = [
        "# Every setting of claude-code-proxy, with its default. Copy to .env and edit.",
        "# Generated from claude_code_proxy/config/settings.py: python -m claude_code_proxy.config.envfile",
        "",
    ]
    for variable, default, meaning in rows():
        lines.append(f"# {meaning}")
        lines.append(f"{variable}={default}")
        lines.append("")
    return "\n".join(lines)


def render_table() -> str:
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for variable, default, meaning in rows():
        shown = f"`{default}`" if default else "(empty)"
        lines.append(f"| `{variable}` | {shown} | {meaning.replace('|', '/')} |")
    return "\n".join(lines)


def render_config_doc(current: str) -> str:
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    return pattern.sub(lambda _: f"{TABLE_START}\n{render_table()}\n{TABLE_END}", current)


def main() -> int:
    ENV_EXAMPLE.write_text(render_env_example(), encoding="utf-8")
    CONFIG_DOC.write_text(render_config_doc(CONFIG_DOC.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
