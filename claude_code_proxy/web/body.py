"""Typed dependencies, and strict JSON body parsing shared by every surface."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from claude_code_proxy.backend.base import Backend
from claude_code_proxy.catalog import ModelCatalog
from claude_code_proxy.config.settings import Settings
from claude_code_proxy.exceptions import InvalidRequestError, TooManyMessagesError
from claude_code_proxy.web.errors import validation_error

M = TypeVar("M", bound=BaseModel)
MODEL_NAME_LIMIT = 256
"""Longest model name kept in logs and the ledger (a name is client text)."""


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def get_catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = request.app.state.catalog
    return catalog


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[Backend, Depends(get_backend)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidRequestError("The request body is not valid UTF-8.") from None
    except ValueError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc.args[0][:200]}") from None
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply.") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return body


Hint = Callable[[dict[str, Any]], str | None]
"""What to add to a validation error for a body of a recognisably wrong shape."""


async def read_request(request: Request, settings: Settings, model: type[M], hint: Hint | None = None) -> M:
    """The body as ``model``: JSON object, message-count limit, then validation."""
    raw = await json_object(request)
    note_requested_model(request, raw)
    enforce_limits(settings, raw)
    return parse(model, raw, hint)


def note_requested_model(request: Request, body: dict[str, Any]) -> None:
    """Record the model the client named before anything can fail, so a rejected request's
    log line and ledger row still say what was asked for."""
    metrics = getattr(request.state, "metrics", None)
    named = body.get("model")
    if metrics is not None and isinstance(named, str):
        metrics.model_requested = named[:MODEL_NAME_LIMIT]


def parse(model: type[M], body: dict[str, Any], hint: Hint | None = None) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = validation_error(exc)
        extra = hint(body) if hint is not None else None
        if extra:
            raise InvalidRequestError(f"{error.message} {extra}", param=error.param) from None
        raise error from None
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply.") from None


def enforce_limits(settings: Settings, body: dict[str, Any]) -> None:
    """Message-count limit, checked on the raw body before validating every message."""
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > settings.max_messages:
        raise TooManyMessagesError(
            f"Too many messages ({len(messages)}); the limit is {settings.max_messages}.", param="messages"
        )


def check_max_tokens(settings: Settings, max_tokens: int, param: str = "max_tokens") -> None:
    if max_tokens > settings.max_tokens_limit:
        raise InvalidRequestError(f"{param} may be at most {settings.max_tokens_limit}.", param=param)
