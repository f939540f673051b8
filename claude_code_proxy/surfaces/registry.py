"""The one registry of API surfaces: every list of routes in the proxy derives from it.

A surface declares its mount prefixes, its error shape, the label its requests carry in
logs, metrics and the usage ledger, which of its paths run the model, which are public
(served without the API key) and which are quiet (logged at debug when they succeed).
The app mounts exactly the routers listed here; a test fails if it serves anything else.

Adding a surface: a package under ``surfaces/`` with ``models``, ``translate``,
``encode``, ``errors`` and ``routes`` modules, its ``SURFACE`` in the package's
``__init__``, and one line in ``default_surfaces()`` (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.routing import BaseRoute

from claude_code_proxy.exceptions import ClaudeProxyError

ErrorBody = Callable[[ClaudeProxyError, str], tuple[int, dict[str, Any]]]
"""(error, request id) -> (HTTP status, body) in the surface's own shape."""


@dataclass(frozen=True)
class Surface:
    name: str
    label: str
    prefixes: tuple[str, ...]
    router: APIRouter
    error_body: ErrorBody
    model_paths: frozenset[str] = frozenset()
    public_paths: frozenset[str] = frozenset()
    quiet_paths: frozenset[str] = frozenset()
    accepts_any_content_type: bool = False
    """Take a JSON body whatever its Content-Type (a browser's cross-site request is still
    refused by its Origin header)."""
    exact_paths: frozenset[str] = frozenset()
    """Single paths the surface owns outside its prefixes (Ollama's ``/``), so that owning
    the root does not make every unknown path its own."""

    def routes(self) -> list[BaseRoute]:
        return list(self.router.routes)


class Registry:
    def __init__(self, surfaces: Iterable[Surface]) -> None:
        self.surfaces = tuple(surfaces)
        if not self.surfaces:
            raise ValueError("at least one surface is needed")
        names = [s.name for s in self.surfaces]
        if len(set(names)) != len(names):
            raise ValueError(f"surface names repeat: {names}")
        self.default = self.surfaces[0]
        self.model_paths = frozenset().union(*(s.model_paths for s in self.surfaces))
        self.public_paths = frozenset().union(*(s.public_paths for s in self.surfaces))
        self.quiet_paths = frozenset().union(*(s.quiet_paths for s in self.surfaces))
        self.labels = tuple(dict.fromkeys(s.label for s in self.surfaces))
        self._by_path = {path: s for s in self.surfaces for path in s.exact_paths}
        # Longest prefix first: /openai/v1/responses before /openai/v1, "/" last.
        self._by_prefix = sorted(
            ((prefix, s) for s in self.surfaces for prefix in s.prefixes), key=lambda item: -len(item[0])
        )

    def for_path(self, path: str) -> Surface:
        """The surface that owns ``path``, or the default one (its error shape for a 404)."""
        if path in self._by_path:
            return self._by_path[path]
        for prefix, surface in self._by_prefix:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/") or prefix == "/":
                return surface
        return self.default

    def error_body(self, path: str, error: ClaudeProxyError, request_id: str) -> tuple[int, dict[str, Any]]:
        return self.for_path(path).error_body(error, request_id)


def default_surfaces() -> list[Surface]:
    """Every surface the proxy serves, in order; the first one's error shape is the default."""
    from claude_code_proxy.ops.routes import SURFACE as OPS
    from claude_code_proxy.surfaces.anthropic import SURFACE as ANTHROPIC
    from claude_code_proxy.surfaces.ollama import SURFACE as OLLAMA
    from claude_code_proxy.surfaces.openai_chat import SURFACE as OPENAI_CHAT
    from claude_code_proxy.surfaces.openai_responses import SURFACE as OPENAI_RESPONSES

    return [ANTHROPIC, OPENAI_CHAT, OPENAI_RESPONSES, OLLAMA, OPS]
