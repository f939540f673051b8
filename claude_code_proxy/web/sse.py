"""All SSE framing, and the streaming response every SSE surface answers with.

Wire formats (checked against the official SDKs):
- Anthropic: ``event: <type>`` + ``data: <json>`` per event; the event line is
  mandatory, the Anthropic SDK skips frames without it.
- OpenAI Chat Completions: ``data: <json>`` only, ending with ``data: [DONE]``.
- OpenAI Responses: ``event: <type>`` + ``data: <json>`` like Anthropic's, never ``[DONE]``.
Separators are ``\\n`` (sse-starlette defaults to ``\\r\\n``; both SDKs accept either,
but ``\\n`` is what the vendors send).  Keep-alive pings are SSE comments, which both
SDKs ignore.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

SEP = "\n"
PING_SECONDS = 15

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(data: Any) -> str:
    return _ENCODER.encode(data)


# Frames are encoded here, once, straight to bytes: compact JSON never contains a raw
# newline, so one ``data:`` line always holds the whole payload (the hot path of a stream).
def anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {dumps(data)}\n\n".encode()


def named_event(name: str, data: dict[str, Any]) -> bytes:
    """An OpenAI Responses frame: the same ``event:`` + ``data:`` pair as Anthropic's."""
    return anthropic_event(name, data)


def openai_data(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else dumps(data)}\n\n".encode()


def _ping() -> ServerSentEvent:
    return ServerSentEvent(comment="ping", sep=SEP)


def event_stream(frames: AsyncIterator[bytes], shutdown_grace: float) -> EventSourceResponse:
    # On shutdown, sse-starlette would cancel streams at once; give them the grace period
    # (plus a margin) so the backend's drain deadline can end them with an error event.
    return EventSourceResponse(
        frames,
        sep=SEP,
        ping=PING_SECONDS,
        ping_message_factory=_ping,
        shutdown_event=anyio.Event(),
        shutdown_grace_period=shutdown_grace + 1.0,
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
