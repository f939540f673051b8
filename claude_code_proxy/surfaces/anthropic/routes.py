"""Anthropic surface routes: parse, translate, hand over to the exchange."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from claude_code_proxy.exceptions import NotFoundError
from claude_code_proxy.exchange import exchange
from claude_code_proxy.surfaces.anthropic.encode import AnthropicStreamEncoder
from claude_code_proxy.surfaces.anthropic.models import MessagesRequest
from claude_code_proxy.surfaces.anthropic.translate import from_anthropic, openai_shape_hint, to_message
from claude_code_proxy.web.body import CatalogDep, SettingsDep, check_max_tokens, read_request

router = APIRouter()


@router.post("/v1/messages")
@router.post("/v1/chat/completions")
async def create_message(request: Request, catalog: CatalogDep, settings: SettingsDep) -> Response:
    body = await read_request(request, settings, MessagesRequest, openai_shape_hint)
    check_max_tokens(settings, body.max_tokens)
    chat = from_anthropic(body, catalog.resolve(body.model))
    return await exchange(request, chat, requested_model=body.model, stream=body.stream,
                          encoder=AnthropicStreamEncoder, render=to_message)


@router.post("/v1/messages/count_tokens")
async def count_tokens() -> Response:
    # Intentional divergence: the Claude Code CLI has no token-counting call, and an
    # estimate would be a made-up number; say so plainly instead.
    raise NotFoundError("Token counting is not available through the Claude Code CLI.")


@router.get("/v1/models")
async def list_models(catalog: CatalogDep) -> dict[str, Any]:
    return catalog.list_body()


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, catalog: CatalogDep) -> dict[str, Any]:
    return catalog.get(model_id).as_json()
