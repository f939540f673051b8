"""Which model names the proxy accepts, and what each one means to the CLI.

Accepted: the listed models, the CLI's aliases (opus, sonnet, haiku), any well-formed
``claude-*`` id (passed through), and the configured alias table (OpenAI-style names),
each also with the ``:latest`` tag the Ollama model list gives every name (clients such as
GitHub Copilot take names from there and send them to the OpenAI surface).
Anything else is "model not found" before a CLI is ever spawned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from claude_code_proxy.exceptions import ModelNotFoundError

CLI_ALIASES = ("opus", "sonnet", "haiku")
_CLAUDE_ID = re.compile(r"^claude-[a-z0-9][a-z0-9.\-]{0,95}(\[1m\])?$")

# Release dates of models we know; other listed ids report the epoch.
_KNOWN_DATES = {
    "claude-opus-5-5": "2026-09-01",
    "claude-sonnet-5-5": "2026-09-01",
    "claude-haiku-5-5": "2026-09-01",
    "claude-sonnet-4-5": "2025-09-29",
    "claude-haiku-4-5": "2025-10-01",
    "claude-opus-4-5": "2025-11-01",
}


@dataclass(frozen=True)
class ModelEntry:
    id: str
    display_name: str
    created: int

    @property
    def created_at(self) -> str:
        return datetime.fromtimestamp(self.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def as_json(self) -> dict[str, object]:
        """One body both official SDKs parse in strict mode (Anthropic and OpenAI fields)."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": "anthropic",
            "type": "model",
            "display_name": self.display_name,
            "created_at": self.created_at,
            "lifecycle": "active",
        }


def display_name(model_id: str) -> str:
    """``claude-sonnet-4-5`` -> ``Claude Sonnet 4.5``."""
    words = model_id.split("-")
    names = [w.capitalize() for w in words if not w.isdigit()]
    version = ".".join(w for w in words if w.isdigit() and len(w) < 3)
    return " ".join(names + ([version] if version else []))


class ModelCatalog:
    def __init__(self, models: list[str], aliases: dict[str, str], default_model: str) -> None:
        self._aliases = {name.lower(): target for name, target in aliases.items()}
        self.default_model = default_model
        self.entries = [self._entry(model_id) for model_id in dict.fromkeys(models)]
        self._by_id = {entry.id: entry for entry in self.entries}

    @staticmethod
    def _entry(model_id: str) -> ModelEntry:
        date = _KNOWN_DATES.get(model_id)
        created = int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp()) if date else 0
        return ModelEntry(model_id, display_name(model_id), created)

    def get(self, model_id: str) -> ModelEntry:
        entry = self._by_id.get(model_id)
        if entry is None:
            raise ModelNotFoundError(model_id)
        return entry

    def resolve(self, requested: str | None) -> str:
        """The name handed to the CLI for a requested model, or ModelNotFoundError."""
        name = (requested or self.default_model).strip().removesuffix(":latest")
        lowered = name.lower()
        if lowered in self._aliases:
            name = self._aliases[lowered]
            lowered = name.lower()
        if name in self._by_id or lowered in CLI_ALIASES:
            return lowered if lowered in CLI_ALIASES else name
        if _CLAUDE_ID.match(name):
            return name
        raise ModelNotFoundError(requested or name)

    def list_body(self) -> dict[str, Any]:
        """The model list: one body both official SDKs parse in strict mode."""
        data = [entry.as_json() for entry in self.entries]
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
