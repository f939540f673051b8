"""Serving another request on a CLI that already answered one, exactly as a fresh CLI would.

After a request whose answer ended cleanly (its result read), the CLI's conversation is cut
back to before the request's first user message with the ``rewind_conversation`` control
request; the next request of the same configuration then sends upstream exactly the body a
fresh CLI would send (the session id aside: one CLI's requests share it).  The rewind must
answer ``rewound: true``, else the CLI is ended and never reused.  A CLI is retired after a
number of requests, an age, a memory size, and when the local date changes.  See the field
notes ("Reusing one CLI") and tests/integration/test_reuse.py, which compares bodies.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

import anyio
import structlog
from claude_agent_sdk import RateLimitEvent, ResultMessage

from claude_code_proxy.backend.process import Prepared
from claude_code_proxy.config.settings import Settings

log = structlog.get_logger(__name__)
REWIND_WAIT_S = 5.0


async def read_result(
    messages: AsyncIterator[Any], wait: float, on_rate_limit: Callable[[RateLimitEvent], object] | None = None
) -> ResultMessage | None:
    """The CLI's result for the turn just answered or interrupted, or None if none comes
    within ``wait`` seconds.  A rate-limit event on the way (the CLI sends the account's
    state just after the answer's end) goes to ``on_rate_limit``."""
    with anyio.move_on_after(wait), suppress(Exception):
        async for message in messages:
            if isinstance(message, RateLimitEvent) and on_rate_limit is not None:
                on_rate_limit(message)
            if isinstance(message, ResultMessage):
                return message
    return None


async def interrupt(
    prepared: Prepared, wait: float, on_rate_limit: Callable[[RateLimitEvent], object] | None = None
) -> ResultMessage | None:
    """Stop the turn the CLI is running and read its result (None: it did not stop)."""
    try:
        with anyio.fail_after(wait):
            await prepared.client.interrupt()
    except Exception as exc:  # any failure means: do not reuse
        log.info("cli.interrupt_failed", error_class=type(exc).__name__)
        return None
    return await read_result(prepared.stream(), wait, on_rate_limit)


async def rewind(prepared: Prepared, first_uuid: str, last_uuid: str) -> bool:
    """Cut the conversation back to before ``first_uuid``; True only on ``rewound: true``."""
    query = getattr(prepared.client, "_query", None)  # the SDK's control channel (no public handle)
    if query is None:
        return False
    request = {"subtype": "rewind_conversation", "target_message_uuid": first_uuid,
               "last_seen_user_message_uuid": last_uuid}
    try:
        with anyio.fail_after(REWIND_WAIT_S):
            response = await query._send_control_request(request)
    except Exception as exc:  # any failure means: do not reuse
        log.info("cli.rewind_failed", error_class=type(exc).__name__)
        return False
    if not isinstance(response, dict) or response.get("rewound") is not True:
        log.info("cli.rewind_refused", cause=str((response or {}).get("cause", ""))[:64])
        return False
    return True


def retire_reason(prepared: Prepared, settings: Settings) -> str | None:
    """Why ``prepared`` must not serve another request, or None."""
    if prepared.uses >= settings.cli_max_requests:
        return "requests"
    if time.monotonic() - prepared.started >= settings.cli_max_age:
        return "age"
    if prepared.day != datetime.date.today():
        return "date"
    rss = prepared.rss_mib()
    if rss is not None and rss >= settings.cli_max_rss_mb:
        return "memory"
    return None
