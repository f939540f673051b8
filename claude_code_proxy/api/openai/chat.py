"""OpenAI surface: ``POST /openai/v1/chat/completions``."""

from __future__ import annotations

import time
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
from claude_code_proxy.api.sse import openai_data, respond
from claude_code_proxy.exceptions import ClaudeProxyError
from claude_code_proxy.models.chat import Completion
from claude_code_proxy.models.openai_models import ChatCompletionRequest
from claude_code_proxy.services.claude_client import BackendItem
from claude_code_proxy.services.openai_streaming import OpenAIStreamEncoder, new_completion_id
from claude_code_proxy.services.openai_translator import from_openai, to_chat_completion

router = APIRouter()
log = structlog.get_logger(__name__)


@router.post("/openai/v1/chat/completions")
async def create_chat_completion(
    request: Request, backend: BackendDep, catalog: CatalogDep, settings: SettingsDep
) -> Response:
    body = await read_request(request, settings, ChatCompletionRequest)
    chat = from_openai(body, catalog.resolve(body.model), settings.default_max_tokens)
    check_max_tokens(settings, chat.max_tokens, "max_completion_tokens" if body.max_completion_tokens else "max_tokens")
    # Responses name the model the client asked for, as OpenAI does.
    return await respond(
        request, backend, chat, requested_model=body.model, stream=bool(body.stream),
        frames=lambda items, names: openai_frames(items, OpenAIStreamEncoder(body.model, body.include_usage, names)),
        render=lambda message: to_chat_completion(
            message, model=body.model, completion_id=new_completion_id(), created=int(time.time())),
    )


async def openai_frames(
    items: AsyncIterator[BackendItem], encoder: OpenAIStreamEncoder
) -> AsyncIterator[bytes]:
    """Chunks, then ``[DONE]``; a failure ends with an error frame and no ``[DONE]``."""
    try:
        async for item in items:
            chunks = encoder.finish(item) if isinstance(item, Completion) else encoder.feed(item)
            for chunk in chunks:
                yield openai_data(chunk)
        if not encoder.finished:
            raise ClaudeProxyError("The Claude Code CLI ended without an answer.")
    except Exception as error:  # the status line is sent: report in-band
        if not isinstance(error, ClaudeProxyError):
            log.error("stream_failed", error_class=type(error).__name__)
        yield openai_data(encoder.error(error))
        return
    yield openai_data("[DONE]")
