"""structlog, configured once: console lines for people, JSON lines for machines.

Only metadata is logged (ids, routes, models, statuses, timings, token counts), never
prompt or answer text and never keys.  Client-controlled strings are escaped.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def escape(value: str, limit: int = 256) -> str:
    """A client-controlled string made safe for one log line (no CR/LF/ANSI forging)."""
    cleaned = value.encode("unicode_escape").decode("ascii")
    return cleaned[:limit]


def configure(level: str = "INFO", fmt: str = "console") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # The SDK logs through the standard library, with the CLI's stderr in its messages
    # (and a "fatal error" each time the proxy kills a finished CLI on purpose). The proxy
    # reports every failure itself, with metadata only: keep the SDK's own log quiet.
    sdk = logging.getLogger("claude_agent_sdk")
    sdk.setLevel(logging.CRITICAL + 1)
    sdk.propagate = False
