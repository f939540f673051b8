"""The backend contract: everything the exchange, shutdown, health and metrics need.

``ClaudeClient`` (backend/claude.py) runs the real CLI; ``ScriptedBackend``
(backend/scripted.py) plays scripted answers in memory for fast tests of the routes,
guards and encoders.  Metrics reach a backend through a ``BackendObserver`` passed in at
construction; nothing outside probes a backend for attributes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

from claude_code_proxy.backend.admission import Ticket
from claude_code_proxy.chat.answer import BackendItem
from claude_code_proxy.chat.request import ChatRequest


@dataclass
class CliStatus:
    found: bool
    path: str | None
    version: str | None = None
    logged_in: bool | None = None
    auth_method: str | None = None
    subscription_type: str | None = None
    api_key_source: str | None = None
    checked_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "path": self.path,
            "version": self.version,
            "logged_in": self.logged_in,
            "auth_method": self.auth_method,
            "subscription_type": self.subscription_type,
        }


@dataclass(frozen=True)
class BackendStats:
    """What a backend reports at a metrics scrape or health check."""

    spawned: int = 0
    """CLI processes started since launch."""
    warm_ready: int = 0
    """Pre-started processes waiting in the warm pool."""
    rate_limit: dict[str, Any] | None = None
    """The subscription's latest rate-limit state the CLI reported (None until it reports one)."""


class BackendObserver(Protocol):
    """Told of events inside the backend that metrics count."""

    def warm_hit(self, model: str) -> None: ...

    def warm_miss(self, model: str) -> None: ...


class NullObserver:
    def warm_hit(self, model: str) -> None:
        pass

    def warm_miss(self, model: str) -> None:
        pass


class Backend(Protocol):
    def ready(self) -> None:
        """Raise ``ServiceUnavailableError`` when no run can start (shutting down, no CLI),
        ``AccountLimitedError`` while the account's plan limit is reached."""

    def run(self, request: ChatRequest, ticket: Ticket) -> AsyncGenerator[BackendItem, None]:
        """Upstream events, then one ``Completion``; failures raise ``ClaudeProxyError``.

        The run owns ``ticket`` from its first step (it sets ``ticket.taken``) and releases
        it when its work is over, which may be a little after the last item.
        """
        ...

    async def status(self, *, refresh: bool = False) -> CliStatus: ...

    def stats(self) -> BackendStats: ...

    def begin_drain(self, grace: float) -> None:
        """Shutdown: refuse new runs, end running ones ``grace`` seconds from now."""

    async def aclose(self) -> None: ...
