"""OpenAI surface: ``GET /openai/v1/models`` and ``GET /openai/v1/models/{id}``.

The list is the very body ``/v1/models`` serves (both SDKs parse it in strict mode).
Retrieving also answers for the alias table's names (``gpt-4o``...), so a client that
checks a configured name before using it works; other unlisted names are 404 as on
``/v1/models/{id}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from claude_code_proxy.api.deps import CatalogDep
from claude_code_proxy.api.v1.models import model_list
from claude_code_proxy.exceptions import ModelNotFoundError
from claude_code_proxy.services.model_catalog import ModelEntry, display_name

router = APIRouter()


@router.get("/openai/v1/models")
async def list_models(catalog: CatalogDep) -> dict[str, Any]:
    return model_list(catalog)


@router.get("/openai/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, catalog: CatalogDep) -> dict[str, Any]:
    try:
        return catalog.get(model_id).as_json()
    except ModelNotFoundError:
        if catalog.resolve(model_id) == model_id:  # not an alias: same answer as /v1/models/{id}
            raise
        return ModelEntry(model_id, display_name(model_id), 0).as_json()
