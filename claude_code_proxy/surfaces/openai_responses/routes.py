"""Responses surface routes: ``POST /openai/v1/responses``, and the stored responses
(``GET``/``DELETE /openai/v1/responses/{id}``, ``GET .../{id}/input_items``)."""

from __future__ import annotations

import time
from typing import Any, Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response

from claude_code_proxy.chat.answer import Answer
from claude_code_proxy.exceptions import InvalidRequestError, TooManyMessagesError
from claude_code_proxy.exchange import exchange
from claude_code_proxy.surfaces.openai_responses.encode import ResponsesStreamEncoder, new_id
from claude_code_proxy.surfaces.openai_responses.models import ResponsesRequest
from claude_code_proxy.surfaces.openai_responses.render import item_prefix, to_response
from claude_code_proxy.surfaces.openai_responses.store import (
    StoredResponse,
    key_scope,
    store_for,
    with_ids,
)
from claude_code_proxy.surfaces.openai_responses.translate import current_items, from_responses
from claude_code_proxy.web.body import CatalogDep, SettingsDep, check_max_tokens, json_object, parse

router = APIRouter()
log = structlog.get_logger(__name__)
_warned: set[str] = set()


def _report_dropped(tools: list[str], items: list[str]) -> None:
    """Say what was left out, never fail on it (Codex sends hosted tools on every turn):
    a warning the first time a kind is seen, then debug lines."""
    kinds = {f"tool:{kind}" for kind in tools} | {f"item:{kind}" for kind in items}
    if not kinds:
        return
    fresh = kinds - _warned
    _warned.update(kinds)
    report = log.warning if fresh else log.debug
    report("responses_not_forwarded", tools=sorted(set(tools)), items=sorted(set(items)),
           why="hosted tools and unknown item types cannot run through the Claude Code CLI")


@router.post("/openai/v1/responses")
async def create_response(request: Request, catalog: CatalogDep, settings: SettingsDep) -> Response:
    raw = await json_object(request)
    if isinstance(raw.get("input"), list) and len(raw["input"]) > settings.max_messages:
        raise TooManyMessagesError(
            f"Too many input items ({len(raw['input'])}); the limit is {settings.max_messages}.", param="input")
    body = parse(ResponsesRequest, raw)
    store, scope = store_for(request, settings), key_scope(settings, request)
    previous = None
    if body.previous_response_id is not None:
        previous = store.get(scope, body.previous_response_id, "previous_response_id")
    translation = from_responses(
        body, catalog.resolve(body.model), settings.default_max_tokens, response_id=new_id("resp"),
        created_at=int(time.time()), history=previous.history() if previous else None)
    _report_dropped(translation.dropped_tools, translation.dropped_items)
    chat, frame = translation.chat, translation.frame
    check_max_tokens(settings, chat.max_tokens, "max_output_tokens")

    own_input = with_ids([item.model_dump(by_alias=True, exclude_none=True) for item in current_items(body)], new_id)

    def finished(response: dict[str, Any]) -> None:
        if body.store is False:
            return
        context = [*(previous.context if previous else []), *own_input, *response["output"]]
        store.put(scope, StoredResponse(response, own_input, context, show_encrypted=frame.encrypted))

    def render(answer: Answer) -> dict[str, Any]:
        ids = [new_id(item_prefix(block, frame)) for block in answer.content]
        now = int(time.time())
        finished(to_response(answer, frame, ids, now, internal=True))
        return to_response(answer, frame, ids, now)

    return await exchange(
        request, chat, requested_model=body.model, stream=bool(body.stream),
        encoder=lambda names: ResponsesStreamEncoder(frame, names, finished), render=render,
    )


@router.get("/openai/v1/responses/{response_id}")
async def retrieve_response(response_id: str, request: Request, settings: SettingsDep) -> dict[str, Any]:
    return store_for(request, settings).get(key_scope(settings, request), response_id).public()


@router.delete("/openai/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request, settings: SettingsDep) -> dict[str, Any]:
    store_for(request, settings).delete(key_scope(settings, request), response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/openai/v1/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str, request: Request, settings: SettingsDep,
    limit: int = 20, order: Literal["asc", "desc"] = "desc", after: str | None = None,
) -> dict[str, Any]:
    if not 1 <= limit <= 100:
        raise InvalidRequestError("limit must be between 1 and 100.", param="limit")
    items = list(store_for(request, settings).get(key_scope(settings, request), response_id).input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequestError(f"No input item {after!r} in this response.", param="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }

