"""Ollama surface routes, at the server root: ``GET|HEAD /``, ``/api/version``, ``/api/tags``,
``/api/show``, ``/api/ps``, ``POST /api/chat`` and ``/api/generate``.

The model list is the catalog's listed models as ``<id>:latest``; any catalog name or
alias works with or without a ``:tag``.  The endpoints that manage local weights, and
embeddings, answer 501 with a plain reason: there are no weights here.

The same API is served under ``/openai`` too: GitHub Copilot's Ollama provider discovers
models at ``<base>/api/...`` and then chats at ``<base>/v1/chat/completions``, which at
the root is the Anthropic surface's path.  With ``<base>`` = ``/openai`` it lands on the
OpenAI surface's ``/openai/v1/chat/completions`` instead.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from claude_code_proxy.catalog import ModelCatalog, ModelEntry, display_name
from claude_code_proxy.exceptions import HTTPStatusError, InvalidRequestError, ModelNotFoundError
from claude_code_proxy.exchange import exchange
from claude_code_proxy.ops.metrics import RequestMetrics
from claude_code_proxy.surfaces.ollama.encode import OllamaStreamEncoder, created_at
from claude_code_proxy.surfaces.ollama.models import ChatBody, GenerateBody, ShowBody
from claude_code_proxy.surfaces.ollama.translate import (
    Marks,
    from_chat,
    from_generate,
    loaded_response,
    model_name,
    show_body,
    stats,
    tags_entry,
    to_chat_response,
    to_generate_response,
)
from claude_code_proxy.web.body import CatalogDep, SettingsDep, check_max_tokens, json_object, parse, read_request
from claude_code_proxy.web.ndjson import ndjson_stream

OLLAMA_VERSION = "0.12.0"
"""The Ollama version announced: clients refuse servers older than what they need
(GitHub Copilot wants 0.6.4 or later; ``think`` and ``tool_name`` came with 0.9)."""

COPILOT_BASE = "/openai"
"""A second mount of the /api routes (see above)."""


def marks(metrics: RequestMetrics) -> Marks:
    """The request's clock readings so far, finishing now."""
    return Marks(metrics.started, metrics.first_item_at, metrics.first_token_at, time.perf_counter())


router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"])
async def root() -> Response:
    # The exact text Ollama answers; clients and scripts probe it to see a server is up.
    return PlainTextResponse("Ollama is running")


async def version() -> dict[str, Any]:
    return {"version": OLLAMA_VERSION}


async def list_models(catalog: CatalogDep) -> dict[str, Any]:
    return {"models": [tags_entry(entry) for entry in catalog.entries]}


async def running_models() -> dict[str, Any]:
    return {"models": []}  # nothing is loaded: every request runs a fresh CLI


async def show_model(request: Request, catalog: CatalogDep, settings: SettingsDep) -> dict[str, Any]:
    body = parse(ShowBody, await json_object(request))
    requested = body.model or body.name
    if not requested:
        raise InvalidRequestError("model is required.", param="model")
    model_id = resolve(catalog, requested)
    try:
        entry = catalog.get(model_id)
    except ModelNotFoundError:  # an alias or an unlisted claude-* id
        entry = ModelEntry(model_id, display_name(model_id), 0)
    return show_body(model_id, entry.created_at, settings.default_max_tokens)


async def chat(request: Request, catalog: CatalogDep, settings: SettingsDep) -> Response:
    body = await read_request(request, settings, ChatBody)
    model = resolve(catalog, body.model)
    if not body.messages:
        return JSONResponse(loaded_response(body, created_at(), chat=True))
    chat = from_chat(body, model, settings.default_max_tokens)
    check_max_tokens(settings, chat.max_tokens, "options.num_predict")
    metrics: RequestMetrics = request.state.metrics
    return await exchange(
        request, chat, requested_model=body.model, stream=body.streams,
        encoder=lambda names: OllamaStreamEncoder(body.model, names, kind="chat", clock=lambda: marks(metrics)),
        render=lambda answer: to_chat_response(answer, model=body.model, created_at=created_at(),
                                               figures=stats(answer.usage, marks(metrics))),
        stream_response=ndjson_stream,
    )


async def generate(request: Request, catalog: CatalogDep, settings: SettingsDep) -> Response:
    body = await read_request(request, settings, GenerateBody)
    model = resolve(catalog, body.model)
    if not (body.prompt or "").strip() and not body.images and not body.suffix:
        return JSONResponse(loaded_response(body, created_at(), chat=False))
    chat = from_generate(body, model, settings.default_max_tokens)
    check_max_tokens(settings, chat.max_tokens, "options.num_predict")
    metrics: RequestMetrics = request.state.metrics
    return await exchange(
        request, chat, requested_model=body.model, stream=body.streams,
        encoder=lambda names: OllamaStreamEncoder(body.model, names, kind="generate", clock=lambda: marks(metrics)),
        render=lambda answer: to_generate_response(answer, model=body.model, created_at=created_at(),
                                                   figures=stats(answer.usage, marks(metrics))),
        stream_response=ndjson_stream,
    )


def resolve(catalog: ModelCatalog, requested: str) -> str:
    """The CLI's name for an Ollama model name (``:tag`` ignored), or a 404 naming it."""
    try:
        return catalog.resolve(model_name(requested) or requested)
    except ModelNotFoundError:
        raise ModelNotFoundError(requested) from None


# -- what a server without local weights cannot do ---------------------------------

SERVED: tuple[tuple[str, list[str], Callable[..., Awaitable[Any]]], ...] = (
    ("/api/version", ["GET"], version),
    ("/api/tags", ["GET"], list_models),
    ("/api/ps", ["GET"], running_models),
    ("/api/show", ["POST"], show_model),
    ("/api/chat", ["POST"], chat),
    ("/api/generate", ["POST"], generate),
)
NO_LOCAL_WEIGHTS = (
    ("/api/pull", ["POST"], "pull models"),
    ("/api/push", ["POST"], "push models"),
    ("/api/create", ["POST"], "create models"),
    ("/api/copy", ["POST"], "copy models"),
    ("/api/delete", ["DELETE"], "delete models"),
    ("/api/blobs/{digest}", ["HEAD", "POST"], "store blobs"),
    ("/api/embed", ["POST"], "compute embeddings"),
    ("/api/embeddings", ["POST"], "compute embeddings"),
)


def _refusal(what: str) -> Callable[[], Awaitable[Response]]:
    async def refuse() -> Response:
        raise HTTPStatusError(
            f"This server has no local weights: it serves Claude models through the Claude Code CLI, "
            f"so it cannot {what}. The models it serves are listed by /api/tags.", 501)
    return refuse


for _base in ("", COPILOT_BASE):
    for _path, _methods, _endpoint in SERVED:
        router.add_api_route(_base + _path, _endpoint, methods=_methods)
    for _path, _methods, _what in NO_LOCAL_WEIGHTS:
        router.add_api_route(_base + _path, _refusal(_what), methods=_methods)
