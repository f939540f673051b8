"""Anthropic surface: ``POST /v1/messages`` (also served at ``/v1/chat/completions``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response

from claude_code_proxy.api.deps import (
    BackendDep,
    CatalogDep,
    SettingsDep,
    check_max_tokens,
    read_request,
)
from claude_code_proxy.api.sse import anthropic_event, respond
from claude_code_proxy.exceptions import ClaudeProxyError, NotFoundError
from claude_code_proxy.models.chat import Completion
from claude_code_proxy.models.requests import MessagesRequest
from claude_code_proxy.services.claude_client import BackendItem
from claude_code_proxy.services.streaming import AnthropicStreamEncoder
from claude_code_proxy.services.translator import from_anthropic

router = APIRouter()
log = structlog.get_logger(__name__)


@router.post("/v1/messages")
@router.post("/v1/chat/completions")
async def create_message(
    request: Request, backend: BackendDep, catalog: CatalogDep, settings: SettingsDep
) -> Response:
    body = await read_request(request, settings, MessagesRequest)
    check_max_tokens(settings, body.max_tokens)
    chat = from_anthropic(body, catalog.resolve(body.model))
    return await respond(
        request, backend, chat, requested_model=body.model, stream=body.stream,
        frames=lambda items, names: anthropic_frames(items, AnthropicStreamEncoder(names)),
    )


@router.post("/v1/messages/count_tokens")
async def count_tokens() -> Response:
    # Intentional divergence: the Claude Code CLI has no token-counting call, and an
    # estimate would be a made-up number; say so plainly instead.
    raise NotFoundError("Token counting is not available through the Claude Code CLI.")


async def anthropic_frames(
    items: AsyncIterator[BackendItem], encoder: AnthropicStreamEncoder
) -> AsyncIterator[bytes]:
    try:
        async for item in items:
            frames = encoder.finish(item) if isinstance(item, Completion) else encoder.feed(item)
            for name, data in frames:
                yield anthropic_event(name, data)
    except Exception as error:  # the status line is sent: report in-band, never a silent cut
        if not isinstance(error, ClaudeProxyError):
            log.error("stream_failed", error_class=type(error).__name__)
            error = ClaudeProxyError("Internal error in the proxy.")
        name, data = encoder.error(error)
        yield anthropic_event(name, data)
