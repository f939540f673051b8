"""All NDJSON framing, and the streaming response the Ollama surface answers with.

Ollama streams one compact JSON object per line (``application/x-ndjson``), with no
keep-alive pings (a blank line or comment would break clients that parse every line)
and no end marker: the last object says ``"done": true``, and a failure after the
status line is an ``{"error": ...}`` line, which the official client raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from claude_code_proxy.web.sse import dumps

MEDIA_TYPE = "application/x-ndjson"


def ndjson_line(data: dict[str, Any]) -> bytes:
    # Compact JSON never holds a raw newline, so each object is exactly one line.
    return f"{dumps(data)}\n".encode()


class NDJSONResponse(StreamingResponse):
    """A streaming response that always closes its frames, however the stream ends: the
    frames' generator owns the CLI run, which must be torn down at once when the client
    leaves, not whenever the generator is collected."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True), suppress(Exception):
                    await aclose()


def ndjson_stream(frames: AsyncIterator[bytes], shutdown_grace: float) -> NDJSONResponse:
    # Unlike SSE there is no shutdown watcher to override: on shutdown the backend's drain
    # deadline ends a running stream with an error line, and uvicorn waits for it.
    return NDJSONResponse(frames, media_type=MEDIA_TYPE,
                          headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
