"""OpenAI surface routes: ``POST /openai/v1/chat/completions`` and ``GET /openai/v1/models``.

The model list is the very body ``/v1/models`` serves (both SDKs parse it in strict mode).
Retrieving also answers for the alias table's names (``gpt-4o``...), so a client that
checks a configured name before using it works; other unlisted names are 404 as on
``/v1/models/{id}``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from claude_code_proxy.catalog import ModelEntry, display_name
from claude_code_proxy.exceptions import ModelNotFoundError
from claude_code_proxy.exchange import exchange
from claude_code_proxy.surfaces.openai_chat.encode import OpenAIStreamEncoder, new_completion_id
from claude_code_proxy.surfaces.openai_chat.models import ChatCompletionRequest
from claude_code_proxy.surfaces.openai_chat.translate import from_openai, to_chat_completion
from claude_code_proxy.web.body import CatalogDep, SettingsDep, check_max_tokens, read_request

router = APIRouter()


@router.post("/openai/v1/chat/completions")
async def create_chat_completion(request: Request, catalog: CatalogDep, settings: SettingsDep) -> Response:
    body = await read_request(request, settings, ChatCompletionRequest)
    chat = from_openai(body, catalog.resolve(body.model), settings.default_max_tokens)
    check_max_tokens(settings, chat.max_tokens, "max_completion_tokens" if body.max_completion_tokens else "max_tokens")
    # Responses name the model the client asked for, as OpenAI does.
    return await exchange(
        request, chat, requested_model=body.model, stream=bool(body.stream),
        encoder=lambda names: OpenAIStreamEncoder(body.model, body.include_usage, names),
        render=lambda answer: to_chat_completion(
            answer, model=body.model, completion_id=new_completion_id(), created=int(time.time())),
    )


@router.get("/openai/v1/models")
async def list_models(catalog: CatalogDep) -> dict[str, Any]:
    return catalog.list_body()


@router.get("/openai/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, catalog: CatalogDep) -> dict[str, Any]:
    try:
        return catalog.get(model_id).as_json()
    except ModelNotFoundError:
        if catalog.resolve(model_id) == model_id:  # not an alias: same answer as /v1/models/{id}
            raise
        return ModelEntry(model_id, display_name(model_id), 0).as_json()
