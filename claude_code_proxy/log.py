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


_HANDLER = "claude-code-proxy"


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
    # Everything else that logs through the standard library (uvicorn, asyncio) is rendered
    # the same way as the proxy's own lines, so a JSON log stays JSON.
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    ))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER] + [handler]
    root.setLevel(max(logging.getLevelName(level), logging.INFO))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
